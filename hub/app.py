"""aiohttp application factory for the hub."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator

from aiohttp import web

from agent.settings import Settings
from hub import auth, rejects, rollup
from hub.capabilities import modules
from hub.config import db_path
from hub.errors import HubError
from hub.ingest import routes
from hub.keys import (
    ALERT_LISTENERS,
    CRED_CACHE,
    READ_DB,
    REJECTS,
    SETTINGS,
    SIGNING_KEY,
    STATS,
    WRITER,
)
from hub.store import Writer, connect
from hub.tasks import running

log = logging.getLogger(__name__)
MAX_BODY = 8 * 1024 * 1024 + 1024  # a full batch (wire.MAX_BATCH_BYTES) and change


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except HubError as e:
        _record_reject(request, e.status, str(e))
        body = {"error": str(e), **getattr(e, "extra", {})}
        return web.json_response(body, status=e.status)
    except web.HTTPRequestEntityTooLarge as e:
        _record_reject(request, 413, "batch over the size limit")
        return web.json_response({"error": f"request body too large: {e.text}"}, status=413)


@web.middleware
async def body_deadline_middleware(request: web.Request, handler):
    """Read a request's body within 3 x read_timeout, so a client cannot hold a handler (and
    its connection) by trickling bytes; handlers then get the body from memory."""
    too_big = request.content_length is not None and request.content_length > MAX_BODY
    # a body already received whole (most: an agent's batch is one write) needs no deadline
    if request.can_read_body and not too_big and not request.content.is_eof():  # too big: 413 unread
        try:
            async with asyncio.timeout(3 * request.app[SETTINGS].read_timeout):
                await request.read()
        except TimeoutError:
            _record_reject(request, 408, "request body not sent in time")
            return web.json_response({"error": "request body not sent in time"}, status=408,
                                     headers={"Connection": "close"})
    return await handler(request)


def _record_reject(request: web.Request, status: int, reason: str) -> None:
    if status >= 500 and status != 503:
        return
    stats = request.app[STATS]
    stats[f"rejected_{status}"] += 1
    rows = request.app[REJECTS].add(status, reason, request.remote)
    if rows:  # counted in memory; only the first of a kind per window is written (and logged)
        log.info("refused %s %s from %s: %d %s", request.method, request.path, request.remote, status, reason)
        _write_rejects(request.app, rows)


def _write_rejects(app: web.Application, rows: list) -> None:
    writer = app[WRITER]
    if writer.depth >= 1000:  # never let refusals queue up work while ingest is behind
        return

    def record(db):
        db.executemany("INSERT INTO ingest_errors (ts, address, status, reason) VALUES (?, ?, ?, ?)", rows)

    task = asyncio.ensure_future(writer.run(record))
    task.add_done_callback(lambda t: t.exception())


async def _reject_summaries(app: web.Application) -> None:
    while True:
        await asyncio.sleep(rejects.WINDOW)
        rows = app[REJECTS].flush()
        if rows:
            log.info("refused requests: %s", "; ".join(f"{r[2]} {r[3]}" for r in rows)[:2000])
            _write_rejects(app, rows)


async def _storage(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    path = db_path(settings.data_dir)
    writer = Writer(path)
    writer.start()
    app[WRITER] = writer
    app[READ_DB] = connect(path, readonly=True)
    app[SIGNING_KEY] = auth.signing_key(settings.data_dir)
    async with running(_maintenance(app), "maintenance"), \
            running(_reject_summaries(app), "reject-summaries"):
        yield
    if rows := app[REJECTS].flush():  # the last window's summary; a full disk must not stop the stop
        try:
            await writer.run(lambda db: db.executemany(
                "INSERT INTO ingest_errors (ts, address, status, reason) VALUES (?, ?, ?, ?)", rows))
        except Exception:
            log.warning("could not record the last refused-request summary", exc_info=True)
    app[READ_DB].close()
    await asyncio.get_running_loop().run_in_executor(None, writer.stop)


async def _maintenance(app: web.Application) -> None:
    """Rollups and retention, in small steps through the writer so ingest never stalls."""
    settings, writer = app[SETTINGS], app[WRITER]
    while True:
        try:
            more = await writer.run(lambda db: rollup.tick(db, time.time(), settings))
        except Exception:
            log.exception("maintenance step failed")
            more = False
        await asyncio.sleep(1 if more else 30)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, body_deadline_middleware], client_max_size=MAX_BODY
    )
    app[SETTINGS] = settings
    app[STATS] = Counter()
    app[CRED_CACHE] = {}
    app[REJECTS] = rejects.Rejects()
    app[ALERT_LISTENERS] = []
    app.add_routes(routes)
    app.cleanup_ctx.append(_storage)
    for m in modules("web"):
        m.setup(app)
    return app
