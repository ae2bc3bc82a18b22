"""While a hub serves a data directory it holds an exclusive lock on ``hub.lock`` there, so
``homelab-hub restore`` can tell a running hub from a stopped one without guessing.

With ``backup_dir`` set, it also takes a backup every ``backup_every`` (counted from the
newest archive there, so restarts do not reset the clock) and keeps ``backup_keep``. The
shorter the interval, the fewer acknowledged events a restore has to report as lost.
"""

from __future__ import annotations

import asyncio
import datetime
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from agent.settings import Settings
from hub.backup import archive as backup
from hub.backup.archive import LOCK_NAME
from hub.keys import SETTINGS
from hub.tasks import running

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


PATTERN = "homelab-backup-*.tar.gz"


def archives(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob(PATTERN))  # names sort by time (UTC stamp)


def take(settings: Settings) -> Path:
    """One automatic backup into backup_dir, then prune to backup_keep. Blocking."""
    d = Path(settings.backup_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S-%f")
    out = backup.create(settings.data_dir, d / f"homelab-backup-{stamp}.tar.gz", settings.config_file).path
    for old in archives(d)[:-max(1, settings.backup_keep)]:
        old.unlink(missing_ok=True)
    return out


async def _schedule(app: web.Application) -> None:
    s = app[SETTINGS]
    loop = asyncio.get_running_loop()
    while True:
        have = archives(s.backup_dir) if Path(s.backup_dir).is_dir() else []
        wait = (have[-1].stat().st_mtime + s.backup_every - time.time()) if have else 0.0
        if wait > 0:
            await asyncio.sleep(min(wait, 3600.0))
            continue
        try:
            out = await loop.run_in_executor(None, take, s)
            log.info("automatic backup written to %s", out)
        except Exception:  # noqa: BLE001 - a failed backup must never stop the hub; retry later
            log.exception("automatic backup into %s failed", s.backup_dir)
            await asyncio.sleep(min(s.backup_every, 300.0))


async def _auto_backup(app: web.Application) -> AsyncIterator[None]:
    if not app[SETTINGS].backup_dir:
        yield
        return
    async with running(_schedule(app), "auto-backup"):
        yield


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_hold_lock)
    app.cleanup_ctx.append(_auto_backup)  # after storage: the database exists
