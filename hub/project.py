"""Projection of events into typed tables, inside the writer's transaction.

Every event is stored in ``events``; a handler registered here for its type also writes the
typed rows (metric samples, file history, twin state). A handler whose table holds every field
of the event may return a slimmer ``data`` for its ``events`` row, so the event is stored once
(log lines: ``events_full`` puts their fields back for readers of ``data``). Handlers only
append rows; the projector writes each statement's rows at flush (``insert_rows``: one
multi-row statement per chunk), in the order the statements were first used, so a batch costs
a handful of SQLite calls.
Handlers must keep per-kind ordering inside one statement (upserts, not delete+insert).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

from agent import wire
from hub import rollup

# One node must not grow the hub without bound by inventing metric names or label values
# (200,000 series once cost 216 MB and a 48 MB /metrics page). A real agent sends a few
# hundred; samples of series past the bound are kept only in ``events`` and counted.
MAX_SERIES_PER_NODE = 5000

Handler = Callable[["Projector", str, int, float, Any], "str | None"]
HANDLERS: dict[type, Handler] = {}


def handles(*types: type) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for t in types:
            HANDLERS[t] = fn
        return fn

    return deco


def split_key(key: str) -> tuple[str, str]:
    """'disk_used_ratio{mount="/"}' -> ('disk_used_ratio', 'mount="/"')."""
    i = key.find("{")
    if i < 0:
        return key, ""
    return key[:i], key[i + 1 : -1] if key.endswith("}") else key[i + 1 :]


_VALUES = re.compile(r"(.*? VALUES )(\(\?(?:, \?)*\))(.*)", re.S)
_CHUNKS = (256, 64, 16, 4, 1)  # a handful of statement texts per insert, each prepared once
_multi: dict[tuple[str, int], str] = {}


def insert_rows(db: sqlite3.Connection, sql: str, rows: Sequence[tuple]) -> None:
    """``db.executemany(sql, rows)`` for an ``INSERT ... VALUES (?, ...)``, in one statement per
    chunk of rows (``VALUES (...), (...), ...``). executemany steps SQLite once per row and
    lets go of the GIL around each step; when another thread wants the GIL (the event loop
    decoding the next batch, the rules engine) each row then waits to get it back, up to the
    switch interval: the writer crawled at a few thousand rows a second under such contention
    where one statement per chunk keeps its pace. Other statements go to executemany."""
    m = _VALUES.fullmatch(sql)
    if m is None or len(rows) < 2:
        db.executemany(sql, rows)
        return
    width = m.group(2).count("?")
    bound = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # 32,766 since SQLite 3.32, 999 before
    i, n = 0, len(rows)
    while i < n:
        k = next(c for c in _CHUNKS if c <= n - i and (c == 1 or c * width <= bound))
        text = _multi.get((sql, k))
        if text is None:
            text = _multi[(sql, k)] = m.group(1) + ", ".join([m.group(2)] * k) + m.group(3)
        db.execute(text, tuple(chain.from_iterable(rows[i:i + k])))
        i += k


class Projector:
    def __init__(self, db: sqlite3.Connection):
        from hub.capabilities import modules

        modules("project")  # importing registers their handlers
        self._handlers = dict(HANDLERS)
        self.db = db
        self.series: dict[tuple[str, str], int] = {
            (r[0], r[1]): r[2] for r in db.execute("SELECT node, key, id FROM series")
        }
        self.next_series = (db.execute("SELECT max(id) FROM series").fetchone()[0] or 0) + 1
        self.series_per_node: dict[str, int] = {}
        for node, _key in self.series:
            self.series_per_node[node] = self.series_per_node.get(node, 0) + 1
        self.series_refused: dict[str, int] = {}  # per node, since start (for /metrics)
        self.rows: dict[str, list[tuple]] = {}
        self.once: dict[str, tuple] = {}
        self.deferred: list[Callable[[sqlite3.Connection], None]] = []
        self._new_series: list[tuple] = []
        self._flushed_series: list[tuple] = []  # written by an earlier flush of this transaction
        self.min_sample_ts: int | None = None

    def begin(self) -> None:
        """A transaction starts."""
        self.rows = {}
        self.once = {}
        self.deferred = []
        self._new_series = []
        self._flushed_series = []
        self.min_sample_ts = None

    def emit(self, sql: str, row: tuple) -> None:
        rows = self.rows.get(sql)
        if rows is None:
            self.rows[sql] = [row]
        else:
            rows.append(row)

    def emit_once(self, sql: str, params: tuple = ()) -> None:
        """A statement run once per commit, after the row statements (in first-use order):
        e.g. indexing a whole batch of new rows for full-text search in one statement."""
        self.once.setdefault(sql, params)

    def defer(self, fn: Callable[[sqlite3.Connection], None]) -> None:
        """Work that must read what it changes (diffing a snapshot against the stored state):
        run at flush, after the row statements, in the order deferred."""
        self.deferred.append(fn)

    def add(self, node: str, seq: int, ts: float, event: Any) -> str | None:
        """Project one event; a str is the ``data`` to store for it instead of its JSON."""
        fn = self._handlers.get(type(event))
        return None if fn is None else fn(self, node, seq, ts, event)

    def series_id(self, node: str, key: str) -> int | None:
        """The series' id; None when it is new and the node is at MAX_SERIES_PER_NODE."""
        sid = self.series.get((node, key))
        if sid is None:
            if self.series_per_node.get(node, 0) >= MAX_SERIES_PER_NODE:
                self.series_refused[node] = self.series_refused.get(node, 0) + 1
                return None
            self.series_per_node[node] = self.series_per_node.get(node, 0) + 1
            sid = self.next_series
            self.next_series += 1
            self.series[(node, key)] = sid
            name, labels = split_key(key)
            self._new_series.append((sid, node, key, name, labels))
        return sid

    def flush(self) -> None:
        if self._new_series:
            insert_rows(self.db, "INSERT INTO series (id, node, key, name, labels) VALUES (?, ?, ?, ?, ?)",
                        self._new_series)
        for sql, rows in self.rows.items():
            insert_rows(self.db, sql, rows)
        for sql, params in self.once.items():
            self.db.execute(sql, params)
        for fn in self.deferred:
            fn(self.db)
        if self.min_sample_ts is not None:
            rollup.lower_watermark(self.db, self.min_sample_ts)
        # the transaction may write more (the writer flushes a group slice by slice)
        self._flushed_series += self._new_series
        self._new_series = []
        self.rows = {}
        self.once = {}
        self.deferred = []
        self.min_sample_ts = None

    def committed(self) -> None:
        """Right after COMMIT: a failure later in the same writer round (an ack that cannot be
        delivered) must not make rollback() forget series that are stored."""
        self._flushed_series = []

    def rollback(self) -> None:
        """The transaction was rolled back: forget the series it created."""
        new = self._flushed_series + self._new_series
        for _sid, node, key, _n, _l in new:
            self.series.pop((node, key), None)
            self.series_per_node[node] -= 1
        if new:
            self.next_series = new[0][0]
        self.begin()


SAMPLE_SQL = "INSERT OR REPLACE INTO samples (series, ts, value) VALUES (?, ?, ?)"


@handles(wire.Metrics)
def _metrics(p: Projector, node: str, seq: int, ts: float, ev: wire.Metrics) -> None:
    t = int(ts)
    if p.min_sample_ts is None or t < p.min_sample_ts:
        p.min_sample_ts = t
    for key, value in ev.samples.items():
        sid = p.series_id(node, key)
        if sid is not None:
            p.emit(SAMPLE_SQL, (sid, t, value))


FILE_CHANGE_SQL = (
    "INSERT INTO file_changes (node, seq, ts, action, path, src_path, size, mode, uid, gid,"
    " sha256, old_sha256, content_changed, secret, diff)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
FILE_STATE_SQL = (
    "INSERT INTO files (node, path, size, mode, uid, gid, sha256, secret, deleted, changed, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node, path) DO UPDATE SET size = excluded.size, mode = excluded.mode,"
    " uid = excluded.uid, gid = excluded.gid, sha256 = excluded.sha256, secret = excluded.secret,"
    " deleted = excluded.deleted, changed = excluded.changed, seq = excluded.seq"
)


@handles(wire.FileChange)
def _file(p: Projector, node: str, seq: int, ts: float, ev: wire.FileChange) -> None:
    p.emit(FILE_CHANGE_SQL, (
        node, seq, ts, ev.action, ev.path, ev.src_path, ev.size, ev.mode, ev.uid, ev.gid,
        ev.sha256, ev.old_sha256, int(ev.content_changed), int(ev.secret), ev.diff,
    ))
    if ev.action == "move" and ev.src_path:
        p.emit(FILE_STATE_SQL, (node, ev.src_path, None, None, None, None, None, 0, 1, ts, seq))
    deleted = int(ev.action == "delete")
    p.emit(FILE_STATE_SQL, (
        node, ev.path, ev.size, ev.mode, ev.uid, ev.gid, ev.sha256, int(ev.secret), deleted, ts, seq,
    ))
