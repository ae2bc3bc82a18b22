"""The hub's own active checks (setting ``checks``), run with the agent's check code and stored
as the events of node ``checks_node``, so the same projection and rules apply; and the pruning
of check history."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import msgspec
from aiohttp import web

from agent import wire
from agent.collectors.checks import parse_checks, run_forever
from agent.settings import SettingsError
from hub.keys import SETTINGS, WRITER
from hub.store import Writer
from hub.tasks import running

log = logging.getLogger(__name__)

_json = msgspec.json.Encoder()


def claim_node(db, name: str) -> None:
    """The hub's checks are stored under a node of their own, never an enrolled agent's."""
    row = db.execute("SELECT credential_hash FROM nodes WHERE name = ?", (name,)).fetchone()
    if row is not None and row[0] is not None:
        raise SettingsError(f"checks_node: {name!r} is an enrolled agent; choose another name")
    db.execute("INSERT OR IGNORE INTO nodes (name, created) VALUES (?, ?)", (name, time.time()))


async def _ship(writer: Writer, node: str, q: asyncio.Queue) -> None:
    while True:
        events = [await q.get()]
        while not q.empty() and len(events) < 500:
            events.append(q.get_nowait())
        first = writer.last_seq.get(node, 0) + 1
        seqs = list(range(first, first + len(events)))
        frame = wire.Frame(node, time.time(), seqs, events, True)
        try:
            await writer.ingest(node, frame, [_json.encode(e).decode() for e in events], None)
        except Exception:  # noqa: BLE001 - a full disk must not end the checks
            log.exception("checks: storing %d hub check result(s) failed", len(events))


async def _prune(writer: Writer, keep: float) -> None:
    while True:
        await writer.run(lambda db: db.execute(
            "DELETE FROM check_results WHERE ts < ?", (time.time() - keep,)))
        await asyncio.sleep(3600)


async def _checks(app: web.Application) -> AsyncIterator[None]:
    settings, writer = app[SETTINGS], app[WRITER]
    async with contextlib.AsyncExitStack() as tasks:
        await tasks.enter_async_context(running(_prune(writer, settings.event_retention), "checks-prune"))
        checks = parse_checks(settings.checks or [])
        if checks:
            node = settings.checks_node
            await writer.run(lambda db: claim_node(db, node))
            q: asyncio.Queue = asyncio.Queue(maxsize=10_000)

            def emit(ev: wire.CheckResult) -> None:
                with contextlib.suppress(asyncio.QueueFull):  # bounded: shed rather than grow
                    q.put_nowait(ev)

            await tasks.enter_async_context(running(run_forever(checks, emit), "checks-run"))
            await tasks.enter_async_context(running(_ship(writer, node, q), "checks-ship"))
            log.info("checks: the hub runs %d check(s) as node %r", len(checks), node)
        yield


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_checks)
