"""Wire the brain into the running hub: decisions are logged through the one writer.

The model itself loads lazily on the first decision (in the executor thread that asks),
so a hub without the ``ai`` extra or without a model starts exactly as fast as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..brain import runtime
from ..config import db_path
from ..keys import SETTINGS, WRITER


async def _configure(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    runtime.configure(settings, db_path(settings.data_dir), app[WRITER])
    yield
    runtime.configure(settings, db_path(settings.data_dir), None)


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_configure)  # after the storage ctx: WRITER exists by then
