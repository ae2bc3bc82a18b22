"""A live in-process hub with chosen rules, and helpers to join a node and post events."""

from __future__ import annotations

import asyncio
import io
import os
import time

import aiohttp
import pytest
from aiohttp import web

from agent import wire
from hub.app import create_app
from hub.config import load_settings


class RulesHub:
    def __init__(self, app, runner, url, data_dir):
        self.app, self.runner, self.url, self.data_dir = app, runner, url, data_dir
        self.seq: dict[str, int] = {}
        self.creds: dict[str, str] = {}

    async def join(self, node: str) -> str:
        from tests.conftest import enroll

        token = enroll(self.data_dir, node)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            async with s.post(f"{self.url}/v1/join", json={"token": token}) as r:
                assert r.status == 200, await r.text()
                self.creds[node] = (await r.json())["credential"]
        return self.creds[node]

    async def send(self, node: str, events: list, sent: float | None = None) -> dict:
        if node not in self.creds:
            await self.join(node)
        first = self.seq.get(node, 0) + 1
        pairs = [(first + i, wire.encode_event(e)) for i, e in enumerate(events)]
        self.seq[node] = first + len(events) - 1
        body = wire.encode_batch(node, time.time() if sent is None else sent, pairs)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.creds[node]}"},
                                         connector=aiohttp.TCPConnector(force_close=True)) as s:
            async with s.post(f"{self.url}/v1/ingest", data=io.BytesIO(body)) as r:
                assert r.status == 200, await r.text()
                return await r.json()

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        from tests.conftest import query

        return query(self.data_dir, sql, args)


@pytest.fixture
async def rules_hub(tmp_path, monkeypatch):
    """Factory: await rules_hub(rules_dir=..., **settings) -> RulesHub (cleaned up after)."""
    for k in list(os.environ):
        if k.startswith("HOMELAB_"):
            monkeypatch.delenv(k)
    made = []

    async def make(rules_dir=None, data_dir=None, **settings):
        data_dir = data_dir or tmp_path / f"hub{len(made)}"
        settings.setdefault("model", "none")  # the brain is not under test here
        s = load_settings(data_dir=data_dir, listen="127.0.0.1:0", rules_dir=rules_dir, **settings)
        app = create_app(s)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        h = RulesHub(app, runner, f"http://127.0.0.1:{port}", data_dir)
        made.append(h)
        return h

    yield make
    for h in made:
        # as a task of its own: awaited inline from pytest-asyncio's finalizer, the shutdown
        # of the other features' background work was seen to stall until the test timeout
        await asyncio.ensure_future(h.runner.cleanup())
