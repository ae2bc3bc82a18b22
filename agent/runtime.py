"""The running agent: collectors -> bounded queue -> spool (disk) -> shipper -> hub.

Collectors never block: ``emit`` puts into a bounded asyncio queue and counts what it
cannot. One task moves the queue into the spool in transactions of up to 1,000 events,
each with the positions its events were read up to (``emit(event, at=(key, position))``),
so a source resumes exactly where the spool ends even after ``kill -9``; the shipper reads
the spool. A collector that crashes is logged, reported once as a
``notice`` and restarted with backoff; it never takes the agent down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from typing import Any

from . import collectors, wire
from .config import read_credential
from .settings import Settings
from .shipper import Backoff, Shipper, urgent
from .spool import Spool
from .state import State

log = logging.getLogger(__name__)

SPOOL_CHUNK = 1000
STOP_GRACE = 5.0


class Agent:
    def __init__(self, settings: Settings):
        self.settings = settings
        state_dir = settings.state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        credential = read_credential(state_dir)
        if not (settings.hub_url and settings.node and credential):
            raise RuntimeError(
                f"this agent has not joined a hub yet ({state_dir}): run `homelab-agent join HUB_URL TOKEN`"
            )
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=settings.queue_size)
        self.spool = Spool(state_dir / "spool.db", settings.spool_max_bytes, settings.keep_acked)
        self.state = State(state_dir / "state.db")
        # where each positioned source resumes: the last position queued (a collector
        # restarted after a crash must not re-read what is still in the queue)
        self.state.positions = self.spool.positions()
        self.shed: Counter[str] = Counter()
        self.stopping = asyncio.Event()
        self.shipper = Shipper(
            self.spool, settings.hub_url, settings.node, credential,
            batch_max_events=settings.batch_max_events, heartbeat=settings.heartbeat,
            linger=settings.ship_linger,
        )
        self.collectors: dict[str, Any] = {}
        self._tasks: list[asyncio.Task] = []

    # Collectors call this. It never blocks and never raises.
    def emit(self, event: wire.Event, source: str = "", at: tuple[str, str] | None = None) -> bool:
        try:
            self.queue.put_nowait((event, at))
            if at is not None:
                self.state.positions[at[0]] = at[1]
            return True
        except asyncio.QueueFull:
            self.shed[source or str(event.__struct_config__.tag)] += 1
            return False

    def notice(self, source: str, level: wire.NoticeLevel, message: str) -> None:
        log.log(logging.WARNING if level != "info" else logging.INFO, "%s: %s", source, message)
        self.emit(wire.Notice(ts=time.time(), source=source, level=level, message=message[:4000]))

    async def _spooler(self) -> None:
        """Queue -> spool, in chunks; one transaction per chunk (events and positions)."""
        while True:
            first = await self.queue.get()
            batch = [first]
            while len(batch) < SPOOL_CHUNK:
                try:
                    batch.append(self.queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            self._store(batch)
            # Let a burst accumulate a little so the spool commits fewer, larger chunks.
            if len(batch) == SPOOL_CHUNK:
                await asyncio.sleep(0)

    def _store(self, items: list[tuple[Any, tuple[str, str] | None]]) -> None:
        events = [e for e, _ in items]
        positions = dict(at for _, at in items if at is not None)  # the last one of each key
        blobs = [wire.encode_event(e) for e in events]
        hurry = bool(self.shed) or urgent(events)
        if self.shed:
            # events that never got a number: a marker at the next number, covering none
            nxt = self.spool.next_seq + len(blobs)
            for source, n in sorted(self.shed.items()):
                blobs.append(wire.encode_event(wire.Dropped(
                    ts=time.time(), first_seq=nxt, count=n, reason=f"queue full: {source}")))
                nxt += 1
            self.shed.clear()
        self.spool.append(blobs, positions)
        self.shipper.spooled(hurry)

    async def _supervise(self, name: str, cls: type) -> None:
        backoff = Backoff(base=1.0, cap=300.0)
        while True:
            started = time.monotonic()
            try:
                inst = cls(self.settings, lambda e, at=None, _n=name: self.emit(e, _n, at), self.state)
                self.collectors[name] = inst
                await inst.run()
                return
            except asyncio.CancelledError:
                raise
            except ValueError as e:  # bad configuration: say it, do not retry
                self.notice(name, "error", f"not started: {e}")
                return
            except Exception as e:
                log.exception("collector %s crashed", name)
                self.notice(name, "error", f"crashed: {type(e).__name__}: {e}; restarting")
                if time.monotonic() - started > 600:
                    backoff.reset()
                await asyncio.sleep(backoff.next() + 1)

    def start_collectors(self) -> None:
        for name in self.settings.collectors:
            try:
                cls = collectors.load(name)
                reason = cls.unavailable(self.settings)
            except (ValueError, ImportError) as e:
                self.notice(name, "error", f"cannot load: {e}")
                continue
            if reason:
                self.notice(name, "info", f"stepping aside: {reason}")
                continue
            self._tasks.append(asyncio.create_task(self._supervise(name, cls), name=f"collector:{name}"))

    async def run(self, *, install_signals: bool = True, flush_timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stopping.set)
        spooler = asyncio.create_task(self._spooler(), name="spooler")
        shipper = asyncio.create_task(self.shipper.run(self.stopping), name="shipper")
        from .jobs import JobRunner  # playbook jobs: long-polls the hub, results go to the spool

        jobs = asyncio.create_task(JobRunner(self.settings, self.state, lambda e: self._store([(e, None)]),
                                             self.shipper.credential).run(self.stopping), name="jobs")
        self.start_collectors()
        log.info("agent %s shipping to %s (%d events spooled)", self.settings.node, self.settings.hub_url, len(self.spool))
        await self.stopping.wait()
        log.info("stopping: flushing")
        # Bounded: a collector stuck in a thread or a subprocess must not keep the agent
        # (and systemd's stop job) waiting; what it had queued is flushed below anyway.
        jobs.cancel()
        for t in self._tasks:
            t.cancel()
        pending = [jobs, *self._tasks]
        done, stuck = await asyncio.wait(pending, timeout=STOP_GRACE)
        for t in done:
            if not t.cancelled() and t.exception():
                log.warning("%s ended with %r", t.get_name(), t.exception())
        for t in stuck:
            log.warning("%s did not stop within %.0fs; leaving it behind", t.get_name(), STOP_GRACE)
        for c in self.collectors.values():
            close = getattr(c, "close", None)
            if close:
                with contextlib.suppress(Exception):
                    close()
        # Everything still queued goes to disk before anything else.
        spooler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await spooler
        rest = []
        while not self.queue.empty():
            rest.append(self.queue.get_nowait())
        if rest or self.shed:
            self._store(rest)
        shipper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await shipper
        await self.shipper.flush(time.monotonic() + flush_timeout)
        await self.shipper.close()
        left = len(self.spool)
        self.spool.close()
        self.state.close()
        log.info("stopped (%d events left in the spool for next time)", left)


def run(settings: Settings) -> None:
    asyncio.run(Agent(settings).run())
