"""The agent's durable spool: every collected event waits here, on disk, until the hub acks it.

One SQLite file in the state directory. Sequence numbers are assigned here, once, in
the same transaction that stores the event, so a number always means the same event,
across restarts and ``kill -9``.

Acked events are not deleted at once: they stay for ``keep_acked`` (a day by default) as
the prefix ``seq <= acked_hi``, so a hub restored from an older backup can be given back
what it had acknowledged (``unack_after``). The spool is bounded in bytes: past the bound,
acked events go first (the hub has them); then the oldest pending events that are not in
flight are shed and replaced by one ``Dropped`` event (stored at the last shed number,
naming the first), which tells the hub exactly which numbers will never come.

Positions (a journal cursor) are stored with the events read up to them, in the same
transaction: after a ``kill -9`` a source resumes exactly after the last event spooled,
neither repeating nor skipping one.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from . import wire

log = logging.getLogger(__name__)

DAY = 86400.0


class Spool:
    def __init__(self, path: Path | str, max_bytes: int, keep_acked: float = DAY):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep_acked = keep_acked
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")  # an event in the spool survives power loss
        # appends at the end, reads the oldest pending: a small cache serves both (the 2 MB
        # default is most of what the agent's heap would otherwise grow to; bench footprint)
        self.db.execute("PRAGMA cache_size = -256")
        self.db.execute("CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS positions (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        if "acked" not in {r[1] for r in self.db.execute("PRAGMA table_info(spool)")}:
            self.db.execute("ALTER TABLE spool ADD COLUMN acked REAL")  # when the hub acked it
        self.bytes = self.db.execute("SELECT coalesce(sum(length(data)), 0) FROM spool").fetchone()[0]
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
        bottom, top = self.db.execute("SELECT min(seq), max(seq) FROM spool").fetchone()
        self.next_seq = max(meta.get("next_seq", 1), (top or 0) + 1)
        # A spool written before acked events were kept holds only pending rows.
        self.acked_hi = meta.get("acked_hi", (bottom or self.next_seq) - 1)
        self.inflight_hi = 0  # rows up to here are in a request; never shed them
        self.shed_total = 0

    def close(self) -> None:
        self.db.close()

    def __len__(self) -> int:
        """Events waiting for the hub (acked ones kept for a restore are not counted)."""
        return self.db.execute("SELECT count(*) FROM spool WHERE seq > ?", (self.acked_hi,)).fetchone()[0]

    def _meta(self, key: str, value: int) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def positions(self) -> dict[str, str]:
        """Where each source read up to, as of the last event spooled from it."""
        return dict(self.db.execute("SELECT key, value FROM positions"))

    def append(self, blobs: list[bytes], positions: dict[str, str] | None = None) -> int:
        """Store encoded events, and the positions they were read up to, in one transaction;
        returns the last seq assigned."""
        if not blobs and not positions:
            return self.next_seq - 1
        seq = self.next_seq
        rows = [(seq + i, b) for i, b in enumerate(blobs)]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT INTO spool (seq, data) VALUES (?, ?)", rows)
            if positions:
                self.db.executemany(
                    "INSERT INTO positions (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value", positions.items())
            self.next_seq = seq + len(rows)
            self._meta("next_seq", self.next_seq)
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

    def _shed(self) -> None:
        target = int(self.max_bytes * 0.9)
        # Acked events first: the hub has them; they were only kept for a restore.
        cur = self.db.execute("SELECT seq, length(data) FROM spool WHERE seq <= ? ORDER BY seq", (self.acked_hi,))
        upto, freed = None, 0
        for seq, size in cur:
            if self.bytes - freed <= target:
                break
            upto, freed = seq, freed + size
        cur.close()
        if upto is not None:
            self.db.execute("DELETE FROM spool WHERE seq <= ?", (upto,))
            self.bytes -= freed
        if self.bytes <= target:
            return
        floor = max(self.inflight_hi, self.acked_hi)
        cur = self.db.execute("SELECT seq, data FROM spool WHERE seq > ? ORDER BY seq", (floor,))
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
        if last_seq is None or first_seq is None:  # both are set together
            return
        marker = wire.encode_event(
            wire.Dropped(ts=time.time(), first_seq=first_seq, count=count, reason="spool full")
        )
        self.db.execute("DELETE FROM spool WHERE seq > ? AND seq <= ?", (floor, last_seq))
        self.db.execute("INSERT INTO spool (seq, data) VALUES (?, ?)", (last_seq, marker))
        self.bytes += len(marker) - freed
        self.shed_total += count
        log.warning("spool over %d bytes: shed %d oldest events (seq %d..%d)", self.max_bytes, count, first_seq, last_seq)

    def read(self, max_events: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """The oldest pending events, at most max_events and (roughly) max_bytes."""
        out: list[tuple[int, bytes]] = []
        size = 0
        for seq, data in self.db.execute(
            "SELECT seq, data FROM spool WHERE seq > ? ORDER BY seq LIMIT ?", (self.acked_hi, max_events)
        ):
            if out and size + len(data) > max_bytes:
                break
            out.append((seq, data))
            size += len(data)
        return out

    def ack(self, seq: int) -> None:
        """The hub has committed everything up to seq: keep it a while, then let it go."""
        if seq <= self.acked_hi:
            return
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("UPDATE spool SET acked = ? WHERE seq > ? AND seq <= ?", (now, self.acked_hi, seq))
        self.acked_hi = seq
        self._meta("acked_hi", seq)
        self._expire(now, seq)
        self.db.execute("COMMIT")

    def _expire(self, now: float, upto: int) -> None:
        """Delete the acked events older than ``keep_acked``. They are the oldest rows (each ack
        stamps a later range with a later time), so walk up from the bottom and stop at the
        first row to keep: an ack with nothing due reads one row, not the day of acked events
        kept (that scan, on every ack, was most of an idle agent's reads). Rows stamped while
        the clock ran ahead (a bad RTC before NTP) would hold every later row back until that
        future passed: they are restamped now, once, when they reach the bottom."""
        bottom = self.db.execute("SELECT acked FROM spool ORDER BY seq LIMIT 1").fetchone()
        if bottom and bottom[0] is not None and bottom[0] > now + 60:
            self.db.execute("UPDATE spool SET acked = ? WHERE acked > ?", (now, now))
        cutoff = now - self.keep_acked
        cur = self.db.execute("SELECT seq, length(data), acked FROM spool WHERE seq <= ? ORDER BY seq", (upto,))
        last, freed = None, 0
        for seq, size, acked in cur:
            if acked is None or acked > cutoff:
                break
            last, freed = seq, freed + size
        cur.close()
        if last is not None:
            self.db.execute("DELETE FROM spool WHERE seq <= ?", (last,))
            self.bytes -= freed

    def unack_after(self, hub_last: int) -> int:
        """The hub has only up to hub_last (restored from a backup): make what we still hold
        above it pending again. Returns the first pending seq (or next_seq)."""
        if hub_last < self.acked_hi:
            kept = self.db.execute("SELECT min(seq) FROM spool").fetchone()[0] or self.next_seq
            self.acked_hi = max(hub_last, kept - 1)
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("UPDATE spool SET acked = NULL WHERE seq > ?", (self.acked_hi,))
            self._meta("acked_hi", self.acked_hi)
            self.db.execute("COMMIT")
        return self.oldest() or self.next_seq

    def put_at(self, seq: int, blob: bytes) -> None:
        """Store an event at a free number below the oldest pending one (a marker for a
        hub-side gap we cannot fill)."""
        # only the one slot: acked events kept below it stay available to a restored hub
        self.db.execute("INSERT OR REPLACE INTO spool (seq, data, acked) VALUES (?, ?, NULL)", (seq, blob))
        self.acked_hi = min(self.acked_hi, seq - 1)
        self._meta("acked_hi", self.acked_hi)
        self.bytes = self.db.execute("SELECT coalesce(sum(length(data)), 0) FROM spool").fetchone()[0]

    def oldest(self) -> int | None:
        """The oldest pending seq, or None when the hub has everything."""
        return self.db.execute("SELECT min(seq) FROM spool WHERE seq > ?", (self.acked_hi,)).fetchone()[0]

    def skip_to(self, hub_last: int) -> int:
        """The hub has seen numbers this spool never issued (a reset state dir): renumber the
        pending events to follow the hub's last one. Returns the shift applied."""
        if hub_last < self.next_seq:
            return 0
        first = self.oldest() or self.next_seq
        delta = hub_last + 1 - first
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM spool WHERE seq <= ?", (self.acked_hi,))  # another life's
        self.db.execute("UPDATE spool SET seq = -(seq + ?)", (delta,))
        self.db.execute("UPDATE spool SET seq = -seq")
        self.next_seq += delta
        self.acked_hi = hub_last
        self._meta("next_seq", self.next_seq)
        self._meta("acked_hi", self.acked_hi)
        self.db.execute("COMMIT")
        self.bytes = self.db.execute("SELECT coalesce(sum(length(data)), 0) FROM spool").fetchone()[0]
        return delta
