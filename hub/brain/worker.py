"""The hub's side of the model worker: the model runs in its own process, so a native crash,
an out-of-memory kill or a hang costs one decision, never the hub (issue 18).

``WorkerModel`` has the same ``complete()`` as a model, so propose, ask, explain and the
digest use it unchanged. It starts ``python -m hub.brain.worker_main`` (a fresh interpreter:
forking a hub that already runs threads is not safe), keeps it and its loaded model warm,
sends one request at a time, lets at most ``queue_max`` more wait, and gives each a deadline.
When the worker dies or misses the deadline (it is then killed) the caller gets a ModelError
that says so: "model worker crashed: signal 11 (SIGSEGV)", "model timed out after 20 s".
The next request starts a fresh worker; repeated failures back off (0.5 s doubling to 60 s).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import msgspec

from hub.brain.model import Completion, ModelError

log = logging.getLogger(__name__)

GRACE = 5.0  # beyond the request's own timeout, which the worker enforces itself, before a kill
_ROOT = str(Path(__file__).resolve().parents[2])  # so the child imports this very hub package


def exit_reason(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = "unknown signal"
        return f"signal {-rc} ({name})"
    return f"exit status {rc}"


class WorkerModel:
    def __init__(self, path: str | Path, n_ctx: int = 2048, n_threads: int = 1, *, factory: str | None = None,
                 queue_max: int = 4, start_timeout: float = 60.0, backoff_max: float = 60.0):
        self.path = str(path)
        self.sha256: str | None = None
        self.n_ctx, self.n_threads, self.factory = n_ctx, n_threads, factory
        self.queue_max, self.start_timeout, self.backoff_max = queue_max, start_timeout, backoff_max
        self.busy = False  # a request is with the worker right now (tests aim their signals by it)
        self.starts = 0
        self.load_ms: int | None = None
        self.primed = 0  # tokens of the system prompt warm() had the worker evaluate ahead
        self._proc: subprocess.Popen | None = None
        self._buf = b""
        self._lock = threading.Lock()  # one request with the worker at a time
        self._slots = threading.Semaphore(queue_max + 1)  # the one being answered + those waiting
        self._failures = 0
        self._not_before = 0.0
        self._last_failure = ""
        self._tail: deque[str] = deque(maxlen=5)
        self._seq = 0
        self._budget = start_timeout  # the deadline being waited for, for the timeout message

    @property
    def pid(self) -> int | None:
        p = self._proc
        return p.pid if p is not None and p.poll() is None else None

    # -- process ---------------------------------------------------------------------------
    def _spawn(self, deadline: float) -> None:
        now = time.monotonic()
        if now < self._not_before:
            raise ModelError(f"model worker restarting after {self._last_failure}; "
                             f"next try in {self._not_before - now:.1f} s")
        argv = [sys.executable, "-m", "hub.brain.worker_main", "--model", self.path,
                "--ctx", str(self.n_ctx), "--threads", str(self.n_threads)]
        if self.factory:
            argv += ["--factory", self.factory]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        # llama.cpp's OpenMP threads spin while they wait for each other; on a busy hub that
        # steals the core the other thread needs (2 threads, load 5: 3.9 s active, 1.1 s passive)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          env=env, close_fds=True, start_new_session=True)
        except OSError as e:  # out of processes or memory: this decision falls back, a later one retries
            self._fail(f"model worker could not start: {e}")
        self._buf = b""
        self.starts += 1
        self.primed = 0
        threading.Thread(target=self._drain_stderr, args=(self._proc,), daemon=True,
                         name="brain-worker-stderr").start()
        msg = self._read(deadline, starting=True)
        if not msg.get("ready"):
            self._fail(f"model worker could not load the model: {msg.get('error')}")
        self.sha256, self.load_ms = msg.get("sha256"), msg.get("load_ms")
        log.info("model worker %s ready in %s ms (%s)", self.pid, self.load_ms, self.path)

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        for raw in proc.stderr or ():
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._tail.append(line[:300])
                log.debug("model worker %d: %s", proc.pid, line)
        with contextlib.suppress(OSError):
            proc.stderr and proc.stderr.close()  # EOF: the worker is gone; this end is ours to close

    def _kill(self) -> int | None:
        p, self._proc = self._proc, None
        if p is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(10)
        for f in (p.stdin, p.stdout):
            with contextlib.suppress(OSError):
                f and f.close()
        return p.returncode

    def _fail(self, reason: str) -> None:
        """Record a dead or killed worker and raise the ModelError the decision falls back with."""
        self._kill()
        self._failures += 1
        self._last_failure = reason
        if self._failures > 1:  # the first failure restarts at once; a pattern backs off
            self._not_before = time.monotonic() + min(self.backoff_max, 0.5 * 2 ** (self._failures - 2))
        log.warning("%s%s", reason, f" (its last words: {self._tail[-1]})" if self._tail else "")
        raise ModelError(reason)

    def _read(self, deadline: float, starting: bool = False) -> dict:
        p = self._proc
        assert p is not None and p.stdout is not None
        fd = p.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    what = "loading the model" if starting else "(worker killed)"
                    self._fail(f"model timed out after {self._budget:.3g} s {what}")
                chunk = os.read(fd, 65536)
                if not chunk:
                    rc = p.wait(10)
                    self._fail(f"model worker crashed: {exit_reason(rc)}")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            return msgspec.json.decode(line)
        except msgspec.DecodeError:
            self._fail(f"model worker sent something that is not an answer: {line[:100]!r}")
            raise  # unreachable: _fail raises

    # -- the model interface ---------------------------------------------------------------
    def warm(self, prime: tuple[str, ...] | list[str] = ()) -> None:
        """Start the worker (and load the model) now, and evaluate the system prompts in
        ``prime``, so the first decision neither waits for the model nor pays for its prompt."""
        with self._lock:
            if self.pid is None:
                self._budget = self.start_timeout
                self._spawn(time.monotonic() + self.start_timeout)
            for system in prime:
                self._seq += 1
                self._send({"id": self._seq, "prime": system})
                msg = self._read(time.monotonic() + self.start_timeout)
                if msg.get("id") != self._seq:
                    self._fail(f"model worker answered out of turn: {str(msg)[:100]}")
                self.primed = int(msg.get("prefix_tokens") or 0)
                log.info("model worker %s evaluated a %d-token system prompt in %s ms", self.pid, self.primed,
                         msg.get("ms"))

    def _send(self, req: dict) -> None:
        try:
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(msgspec.json.encode(req) + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            rc = self._proc.wait(10) if self._proc is not None else None
            self._fail(f"model worker crashed: {exit_reason(rc)}")

    def complete(self, system: str, user: str, schema: dict, *, max_tokens: int = 160,
                 timeout: float = 20.0, stop_after: tuple[str, int] | None = None) -> Completion:
        if not self._slots.acquire(blocking=False):
            raise ModelError(f"model worker busy: {self.queue_max} requests already waiting")
        try:
            t0 = time.monotonic()
            if not self._lock.acquire(timeout=max(timeout, 0.0)):
                raise ModelError(f"model timed out after {timeout:g} s waiting for the worker")
            try:
                self._budget = timeout  # what the caller asked for, named when it is missed
                return self._request(system, user, schema, max_tokens, timeout - (time.monotonic() - t0),
                                     stop_after)
            finally:
                self.busy = False
                self._lock.release()
        finally:
            self._slots.release()

    def _request(self, system: str, user: str, schema: dict, max_tokens: int, timeout: float,
                 stop_after: tuple[str, int] | None = None) -> Completion:
        t0 = time.monotonic()
        if self.pid is None:
            if self._proc is not None:  # died between requests (OOM killer, someone's signal)
                rc = self._proc.poll()
                with contextlib.suppress(ModelError):
                    self._fail(f"model worker crashed: {exit_reason(rc)}")
            # a cold start counts against this decision's budget: the caller's deadline holds
            self._spawn(t0 + min(self.start_timeout, timeout))
            timeout -= time.monotonic() - t0
        timeout = max(timeout, 0.1)
        self._seq += 1
        req = {"id": self._seq, "system": system, "user": user, "schema": schema, "max_tokens": max_tokens,
               "timeout": timeout}
        if stop_after is not None:
            req["stop_after"] = [stop_after[0], int(stop_after[1])]
        self.busy = True
        self._send(req)
        msg = self._read(time.monotonic() + timeout + GRACE)
        if msg.get("id") != self._seq:
            self._fail(f"model worker answered out of turn: {str(msg)[:100]}")
        if "error" in msg:
            raise ModelError(str(msg["error"]))  # the model's own refusal or timeout; the worker lives
        self._failures, self._not_before = 0, 0.0
        self.sha256 = msg.get("sha256") or self.sha256
        return Completion(text=str(msg.get("text") or ""), prompt_tokens=msg.get("prompt_tokens"),
                          completion_tokens=msg.get("completion_tokens"), latency_ms=int(msg.get("latency_ms") or 0),
                          timings=msg.get("timings"))

    def close(self) -> None:
        p = self._proc
        if p is None:
            return
        with contextlib.suppress(OSError):
            p.stdin and p.stdin.close()  # EOF: the worker leaves by itself
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)
        self._kill()


_workers: dict[tuple, WorkerModel] = {}
_workers_lock = threading.Lock()


def workers_state() -> list[dict]:
    """Every model worker this process has, without starting one: what `status` shows."""
    with _workers_lock:
        ws = list(_workers.values())
    return [{"model": w.path, "pid": w.pid, "starts": w.starts, "failures": w._failures,
             "last_failure": w._last_failure or None, "busy": w.busy,
             "primed_tokens": w.primed} for w in ws]


def get_worker(path: Path, n_ctx: int = 2048, n_threads: int = 1, factory: str | None = None) -> WorkerModel:
    """The process-wide worker for this model and shape (started on first use or warm())."""
    key = (str(path), n_ctx, n_threads, factory)
    with _workers_lock:
        w = _workers.get(key)
        if w is None:
            w = _workers[key] = WorkerModel(path, n_ctx, n_threads, factory=factory)
        return w


@atexit.register
def close_all() -> None:
    with _workers_lock:
        ws = list(_workers.values())
        _workers.clear()
    for w in ws:
        with contextlib.suppress(Exception):
            w.close()
