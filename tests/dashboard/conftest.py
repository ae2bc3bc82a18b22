"""Hubs for the dashboard tests, without the model (the seeded month makes disk-almost-full
fire, and these tests are about what the pages show, not the brain).

Seeding a month for three nodes through the ingest route takes seconds, so it is done once
per session into a template data directory; each test's hub starts on a copy of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3

import pytest
from aiohttp import web

from hub.app import create_app
from hub.config import load_settings
from tests.conftest import InProcessHub
from tests.dashboard.seed import seed


@contextlib.asynccontextmanager
async def running_hub(data_dir, **flags):
    settings = load_settings(data_dir=data_dir, listen="127.0.0.1:0", model="none", **flags)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield InProcessHub(data_dir, app, runner, port)
    finally:
        await runner.cleanup()


def _clean_env(mp: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("HOMELAB_"):
            mp.delenv(k)


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("seeded") / "hub"
    with pytest.MonkeyPatch.context() as mp:
        _clean_env(mp)

        async def build():
            async with running_hub(data_dir) as h:
                await seed(h)

        asyncio.run(build())
    db = sqlite3.connect(data_dir / "homelab.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return data_dir


@pytest.fixture
async def fleet(seeded_template, tmp_path, monkeypatch):
    """A running hub on a copy of the seeded month (3 nodes, 30 days)."""
    _clean_env(monkeypatch)
    data_dir = tmp_path / "hub"
    shutil.copytree(seeded_template, data_dir)
    async with running_hub(data_dir) as h:
        yield h
