"""`homelab-agent join`: spend a join token for a node credential."""

from __future__ import annotations

import socket

import aiohttp


async def join(hub_url: str, token: str) -> tuple[str, dict]:
    url = hub_url.rstrip("/") + "/v1/join"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        async with s.post(url, json={"token": token, "hostname": socket.gethostname()}) as r:
            try:
                body = await r.json(content_type=None)
            except ValueError:
                body = {"error": (await r.text())[:200]}
            if r.status != 200:
                raise RuntimeError(f"hub answered {r.status}: {body.get('error', r.reason)}")
    return body["node"], body
