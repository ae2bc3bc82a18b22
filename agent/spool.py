"""The agent's durable spool: every collected event waits here, on disk, until the hub acks it.

One SQLite file in the state directory. Sequence numbers are assigned here, once, in
the same transaction that stores the event, so a number always means the same event,
across restarts and ``kill -9``. The spool is bounded in bytes: past the bound the
oldest events that are not in flight are shed and replaced by one ``Dropped`` event
(stored at the last shed number, naming the first), which tells the hub exactly which
numbers will never come.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from . import wire

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, path: Path | str, max_bytes: int):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")  # an event in the spool survives power loss
        self.db.execute("CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        self.bytes = self.db.execute("SELECT coalesce(sum(length(data)), 0) FROM spool").fetchone()[0]
        row = self.db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        top = self.db.execute("SELECT max(seq) FROM spool").fetchone()[0] or 0
        self.next_seq = max(row[0] if row else 1, top + 1)
        self.inflight_hi = 0  # rows up to here are in a request; never shed them
        self.shed_total = 0

    def close(self) -> None:
        self.db.close()

    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM spool").fetchone()[0]

    def append(self, blobs: list[bytes]) -> int:
        """Store encoded events in one transaction; returns the last seq assigned."""
        if not blobs:
            return self.next_seq - 1
        seq = self.next_seq
        rows = [(seq + i, b) for i, b in enumerate(blobs)]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT INTO spool (seq, data) VALUES (?, ?)", rows)
            self.next_seq = seq + len(rows)
            self._save_next()
            self.bytes += sum(len(b) for b in blobs)
            if self.bytes > self.max_bytes:
                self._shed()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            self.next_seq = seq
            self.bytes = self.db.execute("SELECT coalesce(sum(length(data)), 0) FROM spool").fetchone()[0]
            raise
        return self.next_seq - 1

    def _save_next(self) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES ('next_seq', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (self.next_seq,),
        )

    def _shed(self) -> None:
        target = int(self.max_bytes * 0.9)
        cur = self.db.execute(
            "SELECT seq, data FROM spool WHERE seq > ? ORDER BY seq", (self.inflight_hi,)
        )
        first_seq = last_seq = None
        count = freed = 0
        for seq, data in cur:
            if self.bytes - freed <= target:
                break
            if last_seq is not None and seq == self.next_seq - 1:
                break  # keep the newest event: the Dropped marker must sit below it
            ev = wire.decode_event(data)
            if isinstance(ev, wire.Dropped):
                first_seq = ev.first_seq if first_seq is None else first_seq
                count += ev.count
            else:
                first_seq = seq if first_seq is None else first_seq
                count += 1
            last_seq = seq
            freed += len(data)
        cur.close()
        if last_seq is None:
            return
        marker = wire.encode_event(
            wire.Dropped(ts=time.time(), first_seq=first_seq, count=count, reason="spool full")
        )
        self.db.execute("DELETE FROM spool WHERE seq > ? AND seq <= ?", (self.inflight_hi, last_seq))
        self.db.execute("INSERT INTO spool (seq, data) VALUES (?, ?)", (last_seq, marker))
        self.bytes += len(marker) - freed
        self.shed_total += count
        log.warning("spool over %d bytes: shed %d oldest events (seq %d..%d)", self.max_bytes, count, first_seq, last_seq)

    def read(self, max_events: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """The oldest events, at most max_events and (roughly) max_bytes."""
        out, size = [], 0
        for seq, data in self.db.execute("SELECT seq, data FROM spool ORDER BY seq LIMIT ?", (max_events,)):
            if out and size + len(data) > max_bytes:
                break
            out.append((seq, data))
            size += len(data)
        return out

    def ack(self, seq: int) -> None:
        """The hub has committed everything up to seq."""
        freed = self.db.execute(
            "SELECT coalesce(sum(length(data)), 0) FROM spool WHERE seq <= ?", (seq,)
        ).fetchone()[0]
        self.db.execute("DELETE FROM spool WHERE seq <= ?", (seq,))
        self.bytes -= freed

    def put_at(self, seq: int, blob: bytes) -> None:
        """Store an event at a free number below the oldest row (a marker for a hub-side gap)."""
        self.db.execute("INSERT INTO spool (seq, data) VALUES (?, ?)", (seq, blob))
        self.bytes += len(blob)

    def oldest(self) -> int | None:
        return self.db.execute("SELECT min(seq) FROM spool").fetchone()[0]

    def skip_to(self, hub_last: int) -> int:
        """The hub has seen numbers this spool never issued (a reset state dir): renumber the
        pending events to follow the hub's last one. Returns the shift applied."""
        if hub_last < self.next_seq:
            return 0
        first = self.oldest() or self.next_seq
        delta = hub_last + 1 - first
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("UPDATE spool SET seq = -(seq + ?)", (delta,))
        self.db.execute("UPDATE spool SET seq = -seq")
        self.next_seq += delta
        self._save_next()
        self.db.execute("COMMIT")
        return delta
