"""Process-wide wiring of the brain: which settings, which database, how decisions get logged.

The hub feature (hub/brain/web.py) calls ``configure`` with the running writer, so
``decide()`` can be called with just (alert, candidates, playbooks) from an executor thread
and its log row goes through the one writer. The CLI and the benchmark configure a database
path instead and write with their own short transaction.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from hub.brain.model import resolve_path
from hub.brain.worker import WorkerModel, get_worker

log = logging.getLogger(__name__)

DEFAULT: Any = object()  # "use the configured one" marker for keyword arguments

_state: dict[str, Any] = {"settings": None, "db_path": None, "writer": None}

COLUMNS = ("ts", "purpose", "alert_id", "node", "prompt", "context_ids", "raw_output", "parsed",
           "outcome", "model", "model_sha256", "prompt_tokens", "completion_tokens", "latency_ms")


def configure(settings: Any = None, db_path: Path | str | None = None, writer: Any = None,
              factory: str | None = None) -> None:
    """``factory`` (tests and the benchmark only) names a stand-in model for the worker."""
    _state.update(settings=settings, db_path=db_path, writer=writer, factory=factory)


def setting(key: str, default: Any) -> Any:
    s = _state["settings"]
    return getattr(s, key, default) if s is not None else default


def model() -> WorkerModel | None:
    """The configured model, run in its worker process (hub/brain/worker.py), or None.

    One thread by default: llama.cpp's worker threads spin while waiting for each other, and
    on a 2-core hub that is also ingesting, 2 threads measured 10-20x slower than 1."""
    s = setting("model", None)
    path = resolve_path(os.environ.get("HOMELAB_MODEL") if s is None else s)
    if path is None:
        return None
    threads = max(1, min(int(setting("brain_threads", 1)), os.cpu_count() or 1))
    return get_worker(path, n_ctx=int(setting("brain_ctx", 2048)), n_threads=threads,
                      factory=_state.get("factory"))


def timeout() -> float:
    return float(setting("brain_timeout", 20.0))


def read_db() -> sqlite3.Connection | None:
    path = _state["db_path"]
    if path is None or not Path(path).exists():
        return None
    from hub.store import connect

    return connect(path, readonly=True)


def insert(db: sqlite3.Connection, row: dict) -> int:
    vals = {"context_ids": [], **row, "ts": row.get("ts") or time.time()}
    for k in ("context_ids", "parsed"):
        if not isinstance(vals.get(k), str | None):
            vals[k] = json.dumps(vals[k], sort_keys=True, default=str)
    cur = db.execute(
        f"INSERT INTO brain_decisions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        [vals.get(c) for c in COLUMNS],
    )
    assert cur.lastrowid is not None  # an INSERT just ran
    return cur.lastrowid


def record(row: dict) -> int | None:
    """Log one decision; returns its id, or None when there is nowhere to log it."""
    writer = _state["writer"]
    try:
        if writer is not None:
            if threading.current_thread() is getattr(writer, "_thread", None):
                log.error("brain decision requested from the writer thread; not logged (would deadlock)")
                return None
            return writer.run_sync(lambda db: insert(db, row))
        path = _state["db_path"]
        if path is None:
            return None
        from hub.store import connect

        db = connect(path)
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("BEGIN IMMEDIATE")
            rid = insert(db, row)
            db.execute("COMMIT")
            return rid
        finally:
            db.close()
    except sqlite3.Error as e:
        log.warning("could not log brain decision: %s", e)
        return None
