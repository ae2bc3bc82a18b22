"""The outbox's courier: one asyncio task that sends what is due, grouped per target.

Each round (about once a second) it queues notifications for new proposal transitions, reads
the due rows, and per target: waits out the rate limit (held rows pile up and go as one
message later), marks the group ``sending``, sends it, then marks it ``sent`` or schedules a
retry with exponential backoff (``failed`` after ``retries`` attempts or a permanent refusal).
A clean stop finishes the send in flight and records it, so nothing is sent twice; rows a
``kill -9`` caught in ``sending`` are sent again at the next start (at least once).

Alertmanager forgets alerts that are not re-sent, so firing alerts are re-pushed from the
alerts table every ``resend`` seconds (state, not news: it needs no outbox row).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections import defaultdict, deque

import aiohttp

from agent import aio
from hub.notify import outbox, send
from hub.notify.outbox import Targets
from hub.rules import alertmanager_payload
from hub.store import Writer

log = logging.getLogger(__name__)

DUE_SQL = (
    "SELECT id, channel, target, topic, severity, title, body, payload, attempts FROM notify_outbox"
    " WHERE state = 'pending' AND next_at <= ? ORDER BY id LIMIT 2000"
)
MAX_LISTED = 20  # items spelled out in one grouped message; the rest are counted


def render(rows: list[tuple]) -> tuple[str, str, str]:
    """(title, body, kind) of one message for a group of apprise rows."""
    if len(rows) == 1:
        _id, _c, _t, topic, sev, title, body, *_ = rows[0]
        good = topic == "resolved" or (topic == "fix" and sev == "info")
        return title, body, "resolved" if good else sev
    firing = [r for r in rows if r[3] == "firing"]
    worst = max((r[4] for r in firing), key=outbox.rank, default="info")
    counts: defaultdict[str, int] = defaultdict(int)
    for r in rows:
        counts[r[3]] += 1
    title = f"homelab: {len(rows)} notifications (" + ", ".join(
        f"{n} {topic}" for topic, n in sorted(counts.items())) + ")"
    parts = [f"{r[5]}\n{r[6]}" for r in rows[:MAX_LISTED]]
    if len(rows) > MAX_LISTED:
        parts.append(f"... and {len(rows) - MAX_LISTED} more: homelab-hub notify list")
    return title, "\n\n".join(parts), worst if firing else "info"


class Courier:
    def __init__(self, writer: Writer, targets: Targets, rate: int = 20, retries: int = 8,
                 backoff: float = 2.0, resend: float = 60.0, timeout: float = 20.0, tick: float = 1.0,
                 keep: float = 90 * 86400.0):
        self.writer, self.t = writer, targets
        self.rate, self.retries, self.backoff = rate, retries, backoff
        self.resend, self.timeout, self.tick, self.keep = resend, timeout, tick, keep
        self.urls = targets.by_id()
        self.sent_times: dict[str, deque] = defaultdict(deque)
        self.stopping = asyncio.Event()
        self.stats = {"sent": 0, "failed": 0, "retried": 0, "held": 0}
        self.db: sqlite3.Connection | None = None

    async def run(self) -> None:
        from hub.store import connect

        self.db = connect(self.writer.path, readonly=True)
        try:
            if n := await self.writer.run(outbox.recover):
                log.warning("notify: %d notification(s) interrupted by a crash are sent again", n)
            self._seed_rate()
            last_resend = last_prune = 0.0
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as s:
                while not self.stopping.is_set():
                    try:
                        await self.round(s)
                        if self.t.alertmanager and time.monotonic() - last_resend >= self.resend:
                            last_resend = time.monotonic()
                            await self.resend_firing(s)
                        if time.monotonic() - last_prune >= 3600:  # what is done is kept a while
                            last_prune = time.monotonic()
                            await self.writer.run(lambda db: db.execute(
                                "DELETE FROM notify_outbox WHERE state IN ('sent', 'failed')"
                                " AND created < ?", (time.time() - self.keep,)))
                    except Exception:  # noqa: BLE001 - a bad round must not end notifications
                        log.exception("notify: delivery round failed")
                    await aio.wait(self.stopping, self.tick)
        finally:
            self.db.close()

    def _seed_rate(self) -> None:
        assert self.db is not None
        since = time.time() - 3600
        for target, ts in self.db.execute(
                "SELECT DISTINCT target, sent_at FROM notify_outbox WHERE channel = 'apprise'"
                " AND sent_at > ? ORDER BY sent_at", (since,)):
            self.sent_times[target].append(ts)

    def _rate_ok(self, target: str, now: float) -> bool:
        q = self.sent_times[target]
        while q and q[0] <= now - 3600:
            q.popleft()
        return self.rate <= 0 or len(q) < self.rate

    async def round(self, s: aiohttp.ClientSession) -> None:
        assert self.db is not None
        now = time.time()
        # the cursor moves even with no apprise target, so adding one later is not a flood
        (last,) = self.db.execute(
            "SELECT last_id FROM notify_cursor WHERE name = 'proposal_transitions'").fetchone()
        (top,) = self.db.execute("SELECT coalesce(max(id), 0) FROM proposal_transitions").fetchone()
        if top > last:
            await self.writer.run(lambda db: outbox.scan_transitions(db, self.t, now))
        groups: dict[tuple[str, str], list[tuple]] = defaultdict(list)
        for row in self.db.execute(DUE_SQL, (now,)):
            groups[(row[1], row[2])].append(row)
        jobs = []
        for (channel, target), rows in groups.items():
            url = self.urls.get((channel, target))
            if url is None:
                await self._mark(rows, "failed", "target no longer configured")
                continue
            if channel == "apprise" and not self._rate_ok(target, now):
                self.stats["held"] += len(rows)
                continue  # they wait, and go out together when the hour allows
            jobs.append(self._deliver(s, channel, target, url, rows))
        if jobs:
            await asyncio.gather(*jobs)

    async def _deliver(self, s, channel: str, target: str, url: str, rows: list[tuple]) -> None:
        ids = [r[0] for r in rows]
        await self.writer.run(lambda db: db.execute(
            f"UPDATE notify_outbox SET state = 'sending', attempts = attempts + 1"
            f" WHERE id IN ({','.join('?' * len(ids))})", ids))
        try:
            if channel == "apprise":
                title, body, kind = render(rows)
                err = await send.apprise_send_async(url, title, body, kind, self.timeout)
            else:
                items = [json.loads(r[7]) for r in rows]
                if channel == "alertmanager":
                    url = f"{url.rstrip('/')}/api/v2/alerts"
                err = await send.post_json(s, url, items)
        except Exception as e:  # noqa: BLE001 - a plugin's surprise is a failed attempt, not
            err = (f"{type(e).__name__}: {e}", False)  # rows stuck in 'sending' until restart
        now = time.time()
        if err is None:
            if channel == "apprise":
                self.sent_times[target].append(now)
            self.stats["sent"] += len(rows)
            await self._mark(rows, "sent", None, now)
            return
        msg, permanent = err
        attempts = max(r[8] for r in rows) + 1
        if permanent or attempts >= self.retries:
            self.stats["failed"] += len(rows)
            log.warning("notify: %s target %s gave up after %d attempt(s): %s",
                        channel, target, attempts, msg)
            await self._mark(rows, "failed", msg)
        else:
            self.stats["retried"] += len(rows)
            delay = min(self.backoff * 2 ** (attempts - 1), 600.0)
            log.info("notify: %s target %s: %s; retry in %.0fs", channel, target, msg, delay)
            await self._mark(rows, "pending", msg, next_at=now + delay)

    async def _mark(self, rows: list[tuple], state: str, error: str | None,
                    sent_at: float | None = None, next_at: float | None = None) -> None:
        ids = [r[0] for r in rows]
        await self.writer.run(lambda db: db.execute(
            f"UPDATE notify_outbox SET state = ?, error = ?, sent_at = ?,"
            f" next_at = coalesce(?, next_at) WHERE id IN ({','.join('?' * len(ids))})",
            (state, error, sent_at, next_at, *ids)))

    async def resend_firing(self, s: aiohttp.ClientSession) -> None:
        assert self.db is not None and self.t.alertmanager
        self.db.row_factory = sqlite3.Row
        try:
            from hub.rules import decode_alert as decode

            # only alerts Alertmanager was told of (not rules with notify: false)
            firing = [decode(r) for r in self.db.execute(
                "SELECT * FROM alerts a WHERE state = 'firing' AND EXISTS (SELECT 1 FROM notify_outbox o"
                " WHERE o.alert_id = a.id AND o.channel = 'alertmanager') ORDER BY id LIMIT 1000")]
        finally:
            self.db.row_factory = None
        firing = [a for a in firing if a["firing_at"] is not None]
        if firing:
            await send.post_json(s, f"{self.t.alertmanager.rstrip('/')}/api/v2/alerts",
                                 [alertmanager_payload(a, self.t.generator_url) for a in firing])
