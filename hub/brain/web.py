"""Wire the brain into the running hub: decisions are logged through the one writer, and the
maintenance digest runs every ``brain_digest_every`` (its findings become proposal requests
that a person approves; nothing runs by itself).

With a model configured and ``brain_warm`` on, its worker process starts in the background
as the hub starts, loads the model and evaluates the decisions' system prompt, so the first
decision pays for neither; the hub does not wait for it (nor does a hub without a model).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from hub.brain import runtime
from hub.config import db_path
from hub.keys import READ_DB, SETTINGS, WRITER
from hub.tasks import running

log = logging.getLogger(__name__)


def _last_digest(app: web.Application) -> float | None:
    row = app[READ_DB].execute("SELECT max(ts) FROM brain_decisions WHERE purpose = 'digest'").fetchone()
    return row[0] if row else None


async def _digest_loop(app: web.Application, every: float) -> None:
    """Run the digest when one is due (counted from the last run, across restarts)."""
    from hub.brain.digest import digest, propose
    from hub.playbooks import Registry

    settings, writer = app[SETTINGS], app[WRITER]
    path = db_path(settings.data_dir)
    while True:
        last = _last_digest(app)  # tiny; READ_DB belongs to the loop thread
        # a hub that never ran one waits a full period first: no surprise proposals at start
        due = (last or time.time()) + every
        if last is None:
            await writer.run(lambda db: runtime.insert(db, {"purpose": "digest", "prompt": "scheduled",
                                                             "outcome": "started", "parsed": []}))
        await asyncio.sleep(max(1.0, due - time.time()))
        try:
            books = await asyncio.to_thread(lambda: Registry.from_settings(settings).all())
            findings = await asyncio.to_thread(digest, path, books)

            def queue(db, findings=findings):
                ids = propose(db, findings)
                runtime.insert(db, {"purpose": "digest", "prompt": "scheduled", "outcome": f"queued {len(ids)}",
                                    "parsed": findings})
                return ids

            ids = await writer.run(queue)
            log.info("maintenance digest: %d findings, %d proposal requests queued", len(findings), len(ids))
        except Exception:  # noqa: BLE001 - a failed pass must not stop the next one
            log.exception("maintenance digest failed")
            await asyncio.sleep(60)


async def _warm() -> None:
    """Start the model worker and have it evaluate the decisions' system prompt."""
    from hub.brain.model import ModelError
    from hub.brain.propose import SYSTEM

    mdl = runtime.model()
    if mdl is None:
        return
    try:
        await asyncio.to_thread(mdl.warm, [SYSTEM])
    except ModelError as e:  # the first decision tries again (and falls back, saying why)
        log.warning("model worker not warmed at start: %s", e)


async def _configure(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    runtime.configure(settings, db_path(settings.data_dir), app[WRITER])
    every = float(getattr(settings, "brain_digest_every", 0) or 0)
    async with contextlib.AsyncExitStack() as tasks:
        if getattr(settings, "brain_warm", True):
            await tasks.enter_async_context(running(_warm(), "brain-warm"))
        if every > 0:
            await tasks.enter_async_context(running(_digest_loop(app, every), "brain-digest"))
        yield
    runtime.configure(settings, db_path(settings.data_dir), None)
    from hub.brain import worker

    await asyncio.to_thread(worker.close_all)  # the model worker leaves with the hub


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_configure)  # after the storage ctx: WRITER exists by then
