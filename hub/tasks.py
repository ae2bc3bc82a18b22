"""Background tasks of the running hub, with one start/cancel lifecycle for all of them.

A task is started when the app starts (after storage is open) and cancelled and awaited when
it stops, so nothing outlives the hub's data directory or swallows its shutdown. Two tasks stop
by a flag first instead (the proposal worker and the notification courier): a send or a job
in flight finishes and is recorded once, and cancelling is their fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import web


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, Any], name: str) -> AsyncIterator[asyncio.Task]:
    """Run ``coro`` as a task for the body of the ``async with``; cancel and await it after."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def background(
    app: web.Application, fn: Callable[[web.Application], Coroutine[Any, Any, Any]], name: str
) -> None:
    """Run ``fn(app)`` for the app's lifetime (a ``cleanup_ctx`` entry, in registration order)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with running(fn(app), name):
            yield

    app.cleanup_ctx.append(ctx)
