"""Refused requests, counted in memory and written as rate-limited summaries.

A row per refusal let anyone who can reach the port make the hub write: 6,000 bad-token
requests at ~970/s added 6,000 rows and took a real node's ingest from ~1 ms to 45 ms. Now
the first refusals of a window (at most ``BURST``, one per distinct status and reason) are
written at once, so a lone mistake shows up in ``ingest_errors`` straight away; the rest
are counted and written as one summary row per (status, reason) when the window ends.
The per-status totals are in ``/metrics`` (``homelab_hub_requests{what="rejected_401"}``).
"""

from __future__ import annotations

import time

WINDOW = 5.0  # seconds between summaries
BURST = 20  # rows written at once per window, before everything else waits for the summary
GROUPS = 50  # distinct (status, reason) kept per window; the rest are folded into one
ADDRESSES = 5  # sample addresses kept per group

Row = tuple[float, str | None, int, str]  # (ts, address, status, reason) for ingest_errors


class Rejects:
    def __init__(self) -> None:
        self.window_end = 0.0
        self.written = 0
        self.seen: set[tuple[int, str]] = set()
        self.pending: dict[tuple[int, str], list] = {}  # key -> [count, addresses]

    def add(self, status: int, reason: str, address: str | None, now: float | None = None) -> list[Row]:
        """Count one refusal; returns the rows to write now (usually none)."""
        now = time.time() if now is None else now
        reason = reason[:300]
        key = (status, reason)
        if now >= self.window_end:
            self.window_end, self.written, self.seen = now + WINDOW, 0, set()
        if key not in self.seen and self.written < BURST and not self.pending:
            self.seen.add(key)
            self.written += 1
            return [(now, address, status, reason)]
        if key not in self.pending and len(self.pending) >= GROUPS:
            key = (status, "(other reasons)")
        entry = self.pending.setdefault(key, [0, []])
        entry[0] += 1
        if address and len(entry[1]) < ADDRESSES and address not in entry[1]:
            entry[1].append(address)
        return []

    def flush(self, now: float | None = None) -> list[Row]:
        """The summary rows of everything counted since the last flush."""
        now = time.time() if now is None else now
        rows = []
        for (status, reason), (count, addresses) in sorted(self.pending.items()):
            where = ", ".join(addresses) + (" and others" if len(addresses) >= ADDRESSES else "")
            rows.append((now, where or None, status, f"{count} refused in the last {WINDOW:.0f}s or so: {reason}"))
        self.pending = {}
        return rows
