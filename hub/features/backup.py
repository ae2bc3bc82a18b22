"""While a hub serves a data directory it holds an exclusive lock on ``hub.lock`` there, so
``homelab-hub restore`` can tell a running hub from a stopped one without guessing."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from ..backup import LOCK_NAME
from ..keys import SETTINGS

log = logging.getLogger(__name__)


async def _hold_lock(app: web.Application) -> AsyncIterator[None]:
    data_dir = app[SETTINGS].data_dir
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
    except BlockingIOError:
        # Another hub on the same directory: its single writer would fight ours. Not fatal
        # here (tests run in-process hubs side by side on separate dirs), but say it loudly.
        log.error("another process holds %s: two hubs on one data directory?", data_dir / LOCK_NAME)
    try:
        yield
    finally:
        os.close(fd)  # closing releases the lock


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_hold_lock)
