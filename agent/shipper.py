"""Ships the spool to the hub, one batch at a time, deleting only what the hub acked.

One request in flight keeps ordering trivial and exactly-once simple: the hub acks the
highest sequence it has committed; a lost ack means the batch is sent again and the hub
drops the duplicates. Failures back off exponentially with full jitter.

Bulk events (metrics samples, log lines, shell commands, process tables) linger up to
``linger`` seconds so one request carries several of them: a quiet node otherwise sends a
request per event, and a request costs the hub far more than an event in it (bench fleet).
Anything else (a failed unit, a changed file or package, a device, a job result, a marker
of lost events) ships at once and takes whatever lingers with it, so alerts stay prompt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable

from . import __version__, aio, wire
from .http import HTTPClientError, HubClient, Response
from .spool import Spool

log = logging.getLogger(__name__)

# Kinds that may wait for company. Rules on these use windows (`for:` of minutes, counts
# over time), so seconds of linger do not delay an alert that matters.
LINGER_KINDS = frozenset({"metrics", "log", "command", "processes"})


def urgent(events) -> bool:
    """True when any of these events should not wait for the linger."""
    return any(e.__struct_config__.tag not in LINGER_KINDS for e in events)

# Test-only: shifts the clock the hub sees in `sent` (clock-skew detection tests; no real
# clock can be shifted per process without LD_PRELOAD). Documented in docs/fleet.md.
CLOCK_OFFSET = float(os.environ.get("HOMELAB_AGENT_CLOCK_OFFSET") or 0)


class Backoff:
    def __init__(self, base: float = 0.5, cap: float = 60.0):
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self) -> float:
        delay = random.uniform(0, min(self.cap, self.base * 2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return delay

    def reset(self) -> None:
        self.attempt = 0


class Shipper:
    def __init__(self, spool: Spool, hub_url: str, node: str, credential: str, *,
                 batch_max_events: int = 2000, batch_max_bytes: int = 4 * 1024 * 1024,
                 heartbeat: float = 30.0, linger: float = 0.0, on_response: Callable[[dict], Awaitable[None]] | None = None):
        self.spool = spool
        self.url = hub_url.rstrip("/")
        self.node = node
        self.credential = credential
        self.batch_max_events = batch_max_events
        self.batch_max_bytes = min(batch_max_bytes, wire.MAX_BATCH_BYTES - 64 * 1024)
        self.heartbeat = heartbeat
        self.linger = linger
        self.wakeup = asyncio.Event()
        self._due: float | None = None  # when what is pending must go (monotonic)
        self.backoff = Backoff()
        self.connected = False
        self.on_response = on_response
        self.sent_events = 0
        self._client: HubClient | None = None
        self._said_hello = False

    def client(self) -> HubClient:
        if self._client is None:
            # `join --fingerprint` left the hub's own certificate beside the spool: trust only it
            pinned = self.spool.path.parent / "hub.crt"
            ctx = None
            if pinned.exists():
                from .tls import pinned_context

                ctx = pinned_context(pinned.read_text())
            self._client = HubClient(self.url, {
                "Authorization": f"Bearer {self.credential}",
                "User-Agent": f"homelab-agent/{__version__}",
            }, ssl=ctx, timeout=60, connect_timeout=10)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def hello(self) -> None:
        r = await self.client().request("GET", "/v1/hello")
        body = r.json()
        if r.status != 200:
            raise HubRefused(r.status, body.get("error", r.reason))
        hub_last = int(body["last_seq"])
        if hub_last < self.spool.acked_hi:  # the hub lost what it had acked (restored backup)
            first = self.spool.unack_after(hub_last)
            log.warning("hub has seq %d but had acked %d: resending from %d", hub_last, self.spool.acked_hi, first)
        shift = self.spool.skip_to(hub_last)
        if shift:
            log.warning("hub has seen seq %d already (state dir reset?): renumbered pending events by %d",
                        body["last_seq"], shift)
        self._said_hello = True

    async def send_once(self) -> int:
        """Send one batch (or a heartbeat). Returns events acked; raises on failure."""
        if not self._said_hello:
            await self.hello()
        rows = self.spool.read(self.batch_max_events, self.batch_max_bytes)
        body = wire.encode_batch(self.node, time.time() + CLOCK_OFFSET, rows)
        self.spool.inflight_hi = rows[-1][0] if rows else 0
        try:
            r: Response = await self.client().request("POST", "/v1/ingest", body, {
                "Content-Type": "application/vnd.msgpack",
                # what waits here behind this batch, for the hub's /metrics
                "Homelab-Spool-Backlog": str(self.spool.next_seq - 1 - rows[-1][0] if rows else 0)})
            reply, status = r.json(), r.status
        finally:
            self.spool.inflight_hi = 0
        if status == 200:
            self.spool.ack(int(reply["ack"]))
            self.connected = True
            if self.on_response:
                await self.on_response(reply)
            self.sent_events += len(rows)
            return len(rows)
        reason = reply.get("error", "")
        if status == 409 and "expected" in reply:
            self._mark_gap(int(reply["expected"]), reason)
            return 0
        if status == 413 and len(rows) > 1:  # a proxy with a smaller body limit: send less
            self.batch_max_events = max(1, len(rows) // 2)
            self.batch_max_bytes = max(16 * 1024, self.batch_max_bytes // 2)
            log.warning("hub answered 413 for %d events: batches now at most %d events", len(rows), self.batch_max_events)
            return 0
        from_hub = r.headers.get("content-type", "").startswith("application/json")
        if status in (400, 413, 422) and rows and from_hub:
            self._quarantine(rows, status, reason)
            return 0
        raise HubRefused(status, reason)

    def _mark_gap(self, expected: int, reason: str) -> None:
        """The hub lacks numbers from `expected` on (acked, then the hub was restored from an
        older backup). Resend what we kept; mark what we no longer hold with a Dropped marker."""
        first = self.spool.unack_after(expected - 1)
        if first <= expected:
            log.warning("hub is missing seq %d onwards: resending them from the spool", expected)
            return
        log.error("hub is missing seq %d..%d that it had acked before: %s", expected, first - 1, reason)
        marker = wire.Dropped(ts=time.time(), first_seq=expected, count=first - expected,
                              reason="hub lost events it had acknowledged (restored from backup?)")
        self.spool.put_at(first - 1, wire.encode_event(marker))

    def _quarantine(self, rows, status: int, reason: str) -> None:
        """The hub will never take this batch: replace it by a counted marker, keep going.
        (Only a bug can get here: the agent and hub share the wire module.)"""
        first, last = rows[0][0], rows[-1][0]
        log.error("hub refused seq %d..%d with %d (%s): dropping them", first, last, status, reason)
        marker = wire.Dropped(ts=time.time(), first_seq=first, count=len(rows),
                              reason=f"refused by hub ({status}): {reason}"[:1000])
        self.spool.ack(last)
        self.spool.put_at(last, wire.encode_event(marker))

    def spooled(self, urgent: bool) -> None:
        """New events are in the spool: ship them now (urgent) or within the linger."""
        now = time.monotonic()
        due = now if urgent else now + self.linger
        if self._due is None or due < self._due:
            self._due = due
        self.wakeup.set()

    async def _linger(self, stopping: asyncio.Event) -> None:
        """Wait until the pending events are due, a full batch is waiting, or we stop."""
        while self._due is not None and not stopping.is_set():
            left = self._due - time.monotonic()
            if left <= 0 or self.spool.next_seq - 1 - self.spool.acked_hi >= self.batch_max_events:
                return
            self.wakeup.clear()
            await aio.wait(self.wakeup, left)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                if self.spool.oldest() is None:
                    # idle: wait for new events or the heartbeat interval
                    self.wakeup.clear()
                    if await aio.wait(self.wakeup, self.heartbeat):
                        continue
                await self._linger(stopping)
                # what arrives while this request is in flight starts a linger of its own
                self._due = None
                await self.send_once()
                self.backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the shipper must outlive any failure; the spool keeps the data
                self._due = 0.0  # after the backoff, what is pending is overdue
                self.connected = False
                self._said_hello = False
                delay = self.backoff.next()
                if isinstance(e, HubRefused) and e.status in (401, 403):
                    delay = max(delay, 30.0)
                expected = isinstance(e, HTTPClientError | TimeoutError | OSError | HubRefused)
                log.warning("hub %s: %s; retrying in %.1fs (%d events spooled)", self.url,
                            e if expected else repr(e), delay, len(self.spool), exc_info=not expected)
                await aio.wait(stopping, delay)

    async def flush(self, deadline: float) -> None:
        """On shutdown: send what we can before the deadline; the rest stays spooled."""
        while self.spool.oldest() is not None and time.monotonic() < deadline:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await self.send_once()
            except (TimeoutError, OSError, HubRefused):
                return


class HubRefused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(f"{status} {reason}")
        self.status = status
