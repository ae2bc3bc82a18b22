"""Optional: forward every committed log line to Loki's push API (``/loki/api/v1/push``).

Off unless ``loki_url`` is set. A commit subscriber (writer thread) appends each ``log``
event to a bounded in-memory queue; one task ships batches of up to ``BATCH_LINES`` lines
as JSON streams, retrying with exponential backoff and full jitter while Loki is down.
Past ``loki_queue`` lines the oldest are shed and counted (``loki_shed`` in /metrics):
the hub's own database keeps every line regardless, so Loki is a copy, never the record.

Labels stay low-cardinality, as Loki wants: ``job="homelab"``, ``node``, and, when the
agent knew them, ``unit``, ``program`` and ``level`` (from the syslog severity).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from agent import wire
from agent.shipper import Backoff
from hub.keys import SETTINGS, STATS, WRITER
from hub.tasks import running

log = logging.getLogger(__name__)

BATCH_LINES = 1000
BATCH_WAIT = 1.0  # seconds to let lines accumulate into one request
FLUSH_TIMEOUT = 3.0  # at shutdown
LEVELS = ("emerg", "alert", "crit", "error", "warning", "notice", "info", "debug")

Line = tuple[tuple[tuple[str, str], ...], str, str]  # (labels, ns timestamp, line)


class LokiForwarder:
    def __init__(self, url: str, max_queue: int, stats: collections.Counter):
        self.url = url.rstrip("/") + "/loki/api/v1/push"
        self.max_queue = max(1, max_queue)
        self.stats = stats
        self.queue: collections.deque[Line] = collections.deque()
        self.head = 0  # position (since start) of queue[0]
        self.lock = threading.Lock()
        self.wake = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.backoff = Backoff(base=0.5, cap=30.0)

    # -- writer thread -------------------------------------------------------------------

    def on_commit(self, events) -> None:
        added = 0
        with self.lock:
            for c in events:
                ev = c.event
                if not isinstance(ev, wire.Log):
                    continue
                self.queue.append((labels_of(c.node, ev), str(int(ev.ts * 1e9)), ev.message))
                added += 1
            shed = len(self.queue) - self.max_queue
            for _ in range(max(0, shed)):
                self.queue.popleft()
                self.head += 1
        if shed > 0:
            self.stats["loki_shed"] += shed
        if added:
            self.loop.call_soon_threadsafe(self.wake.set)

    # -- event loop ----------------------------------------------------------------------

    def _take(self) -> tuple[int, list[Line]]:
        with self.lock:
            return self.head, [self.queue[i] for i in range(min(BATCH_LINES, len(self.queue)))]

    def _drop_sent(self, start: int, n: int) -> None:
        # numbering by position (head) makes this right even if lines were shed meanwhile
        with self.lock:
            while self.queue and self.head < start + n:
                self.queue.popleft()
                self.head += 1

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                await asyncio.sleep(BATCH_WAIT)
            start, batch = self._take()
            try:
                async with session.post(self.url, json=payload(batch)) as r:
                    if r.status >= 300:
                        text = (await r.text())[:300]
                        raise RuntimeError(f"Loki answered {r.status}: {text}")
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError, RuntimeError) as e:
                self.stats["loki_failures"] += 1
                delay = self.backoff.next()
                log.warning("forwarding %d log lines to %s failed: %s; retrying in %.1fs (%d queued)",
                            len(batch), self.url, e, delay, len(self.queue))
                await asyncio.sleep(delay)
                continue
            self.backoff.reset()
            self._drop_sent(start, len(batch))
            self.stats["loki_lines"] += len(batch)


    async def flush(self, session: aiohttp.ClientSession, timeout: float) -> None:
        """On shutdown: one quick try at what is still queued; Loki being down must not hold
        the hub's exit (the lines are in the hub's database either way)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.queue and asyncio.get_running_loop().time() < deadline:
            start, batch = self._take()
            try:
                async with asyncio.timeout_at(deadline):
                    async with session.post(self.url, json=payload(batch)) as r:
                        if r.status >= 300:
                            break
            except (aiohttp.ClientError, TimeoutError, OSError):
                break
            self._drop_sent(start, len(batch))
            self.stats["loki_lines"] += len(batch)
        if self.queue:
            log.warning("%d log lines not forwarded to Loki at shutdown", len(self.queue))


def labels_of(node: str, ev: wire.Log) -> tuple[tuple[str, str], ...]:
    lab = [("job", "homelab"), ("node", node)]
    if ev.unit:
        lab.append(("unit", ev.unit))
    if ev.program:
        lab.append(("program", ev.program))
    if ev.severity is not None and 0 <= ev.severity < len(LEVELS):
        lab.append(("level", LEVELS[ev.severity]))
    return tuple(lab)


def payload(batch: list[Line]) -> dict:
    """Loki's JSON push body: one stream per label set, values [["<ns>", "<line>"], ...] in order."""
    streams: dict[tuple, list[list[str]]] = {}
    for labels, ts, line in batch:
        streams.setdefault(labels, []).append([ts, line])
    return {"streams": [{"stream": dict(k), "values": v} for k, v in streams.items()]}


async def _context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    fwd = LokiForwarder(settings.loki_url, settings.loki_queue, app[STATS])
    app[WRITER].subscribers.append(fwd.on_commit)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30, connect=10))
    log.info("forwarding logs to %s", fwd.url)
    async with running(fwd.run(session), "loki-forwarder"):
        yield
    await fwd.flush(session, FLUSH_TIMEOUT)
    await session.close()


def setup(app: web.Application) -> None:
    if app[SETTINGS].loki_url:
        app.cleanup_ctx.append(_context)
