"""Helpers shared by the fleet tests: an agent-like client speaking the real wire format."""

from __future__ import annotations

import io
import time

import aiohttp

from agent import wire


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
