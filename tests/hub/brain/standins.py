"""Model stand-ins for the worker process (loaded there by file path, see worker_main.load_factory).

What the prompt says decides what the stand-in does, so one worker can be made to crash on
one decision and answer the next: SEGFAULT dereferences NULL (a real SIGSEGV in native code),
ABORT calls abort(), HANG never answers; anything else gets a schema-valid answer at once.
"""

from __future__ import annotations

import ctypes
import json
import os
import time

from hub.brain.model import Completion


def _answer(schema: dict) -> dict:
    """The first shape the schema allows: a decision's first candidate, an ask's first template."""
    shape = schema["anyOf"][0] if "anyOf" in schema else schema
    out: dict = {}
    for k, v in (shape.get("properties") or {}).items():
        if "const" in v:
            out[k] = v["const"]
        elif "enum" in v:
            out[k] = v["enum"][0]
        elif v.get("type") == "array":
            out[k] = []
        elif v.get("type") == "object":
            out[k] = {}
        else:
            out[k] = "stand-in"
    return out


class StandIn:
    def __init__(self, path, n_ctx=2048, n_threads=1):
        self.path = str(path)
        self.sha256 = "5" * 64

    def complete(self, system, user, schema, *, max_tokens=160, timeout=20.0, stop_after=None):
        if "SEGFAULT" in user:
            ctypes.string_at(0)
        if "ABORT" in user:
            os.abort()
        if "HANG" in user:
            time.sleep(3600)
        text = json.dumps(_answer(schema))
        return Completion(text=text, prompt_tokens=len(user) // 4, completion_tokens=len(text) // 4, latency_ms=1,
                          timings={"load_ms": 0, "prompt_ms": 0, "gen_ms": 0})


class NoLoad(StandIn):
    def _load(self):
        from hub.brain.model import ModelError

        raise ModelError("cannot load model /nowhere.gguf: stand-in refuses")
