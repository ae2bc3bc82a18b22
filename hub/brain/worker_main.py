"""The model worker process: loads the model once, then answers requests one at a time.

Started by hub/brain/worker.py as ``python -m hub.brain.worker_main`` (a fresh interpreter,
never a fork of the threaded hub). Protocol: one JSON object per line; stdin carries
requests (a completion, or ``{"id", "prime": system}`` to evaluate a system prompt ahead), the saved stdout carries answers, and fd 1 itself is pointed at stderr so nothing
llama.cpp prints can corrupt the protocol. A native crash here ends this process only.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import importlib.util
import os
import signal
import sys
import time
from typing import Any

import msgspec

_enc = msgspec.json.Encoder()


def load_factory(spec: str | None) -> Any:
    """``module:attr`` or ``/path/file.py:attr`` -> a callable(path, n_ctx, n_threads) that
    returns a model; the default is the real llama.cpp model. Only the hub's own code passes
    this (tests and the benchmark use it for stand-ins); it is not a setting."""
    if not spec:
        from hub.brain.model import LlamaModel

        return LlamaModel
    where, _, attr = spec.rpartition(":")
    if where.endswith(".py"):
        s = importlib.util.spec_from_file_location("brain_worker_factory", where)
        if s is None or s.loader is None:
            raise SystemExit(f"model worker: cannot load factory file {where}")
        mod = importlib.util.module_from_spec(s)
        s.loader.exec_module(mod)
    else:
        mod = importlib.import_module(where)
    return getattr(mod, attr)


def _die_with_parent() -> None:
    """SIGKILL this worker when the hub dies, even if it is deep in native code then."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hub.brain.worker_main")
    ap.add_argument("--model", required=True)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--factory", default=None)
    args = ap.parse_args(argv)
    _die_with_parent()
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj: dict) -> None:
        out.write(_enc.encode(obj) + b"\n")

    from hub.brain.model import ModelError

    t0 = time.monotonic()
    try:
        model = load_factory(args.factory)(args.model, n_ctx=args.ctx, n_threads=args.threads)
        if hasattr(model, "_load"):
            model._load()  # warm before saying ready: the first decision does not pay for it
    except ModelError as e:
        send({"ready": False, "error": str(e)})
        return 3
    send({"ready": True, "sha256": getattr(model, "sha256", None),
          "load_ms": int((time.monotonic() - t0) * 1000), "pid": os.getpid()})
    for line in sys.stdin.buffer:
        try:
            req = msgspec.json.decode(line)
            if "prime" in req:  # evaluate a system prompt ahead of the prompts that start with it
                done = model.prime(str(req["prime"])) if hasattr(model, "prime") else {"prefix_tokens": 0}
                send({"id": req["id"], **done})
                continue
            extra = {"stop_after": (str(req["stop_after"][0]), int(req["stop_after"][1]))} if req.get("stop_after") else {}
            c = model.complete(req["system"], req["user"], req["schema"], max_tokens=int(req["max_tokens"]),
                               timeout=float(req["timeout"]), **extra)
        except ModelError as e:
            send({"id": req.get("id") if isinstance(req, dict) else None, "error": str(e)})
            continue
        except (msgspec.DecodeError, KeyError, TypeError, ValueError) as e:
            send({"id": None, "error": f"bad request to the model worker: {e}"})
            continue
        send({"id": req["id"], "text": c.text, "prompt_tokens": c.prompt_tokens,
              "completion_tokens": c.completion_tokens, "latency_ms": c.latency_ms,
              "timings": c.timings, "sha256": getattr(model, "sha256", None)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
