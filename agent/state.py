"""Small persistent state for collectors (cursors, file positions, baselines): state.db."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


class State:
    def __init__(self, path: Path | str):
        # Not in state.db: where a source read with ``emit(event, at=(key, position))``
        # resumes. The agent fills it from the spool, where each position is stored in the
        # transaction of the events read up to it, and moves it on as events are queued.
        self.positions: dict[str, str] = {}
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("PRAGMA cache_size = -128")  # a few small keys; see agent/spool.py
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set(self, key: str, value: Any) -> None:
        self.db.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def close(self) -> None:
        self.db.close()
