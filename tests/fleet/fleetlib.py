"""Helpers shared by the fleet tests: an agent-like client speaking the real wire format."""

from __future__ import annotations

import importlib.util
import io
import time
from pathlib import Path

import aiohttp

from agent import wire

# tests/conftest.py's helpers, loaded by path: another directory's conftest.py may own the
# module name "conftest" when the whole suite runs.
_spec = importlib.util.spec_from_file_location("_fleet_root_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
assert _spec and _spec.loader
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
Proc = _root.Proc
free_port = _root.free_port
wait_for = _root.wait_for
async_wait_for = _root.async_wait_for
enroll = _root.enroll
query = _root.query


async def join(hub, name: str) -> str:
    token = hub.enroll(name)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{hub.url}/v1/join", json={"token": token}) as r:
            assert r.status == 200, await r.text()
            return (await r.json())["credential"]


async def send(hub, cred: str, node: str, events: list[tuple[int, wire.Event]], *,
               sent: float | None = None, headers: dict | None = None) -> tuple[int, dict]:
    body = wire.encode_batch(node, time.time() if sent is None else sent,
                             [(s, wire.encode_event(e)) for s, e in events])
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {cred}", **(headers or {})}) as s:
        async with s.post(f"{hub.url}/v1/ingest", data=io.BytesIO(body)) as r:
            return r.status, await r.json()
