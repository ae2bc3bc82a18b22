"""Retention for the ``logs`` and ``commands`` tables: rows older than ``event_retention``
go, like the events they came from, in small chunks through the writer so ingest never
waits long behind a sweep (each deleted row also leaves its full-text index by trigger)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator

from aiohttp import web

from hub.keys import SETTINGS, WRITER

log = logging.getLogger(__name__)

TABLES = ("logs", "commands")
CHUNK = 2000
PERIOD = 600.0  # seconds between sweeps when nothing is left to delete


def expire(db: sqlite3.Connection, cutoff: float) -> bool:
    """Delete up to CHUNK rows older than cutoff from each table. True when more are waiting."""
    more = False
    for table in TABLES:
        cur = db.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE ts < ? ORDER BY ts LIMIT ?)",
            (cutoff, CHUNK),
        )
        more |= cur.rowcount == CHUNK
    return more


async def _sweep(app: web.Application) -> None:
    writer, retention = app[WRITER], app[SETTINGS].event_retention
    while True:
        try:
            more = await writer.run(lambda db: expire(db, time.time() - retention))
        except Exception:  # a failed sweep is retried next period; ingest is unaffected
            log.exception("logs/commands retention failed")
            more = False
        await asyncio.sleep(1.0 if more else PERIOD)


async def _retention(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_sweep(app), name="activity-retention")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_retention)
