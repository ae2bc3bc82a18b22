"""The agent's small HTTP client against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from agent.http import HTTPClientError, HubClient


@pytest.fixture
async def server():
    async def echo(request):
        return web.json_response({"got": (await request.read()).decode(), "auth": request.headers.get("Authorization")})

    async def chunked(request):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(5):
            await resp.write(f"part{i};".encode())
        await resp.write_eof()
        return resp

    async def slow(request):
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def close(request):
        return web.Response(text="bye", headers={"Connection": "close"})

    async def status(request):
        return web.json_response({"error": "nope"}, status=int(request.match_info["code"]))

    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_post("/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/slow", slow)
    app.router.add_get("/close", close)
    app.router.add_get("/status/{code}", status)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=0.3)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", None
    await runner.cleanup()


async def test_post_json_and_keepalive(server):
    url, _ = server
    c = HubClient(url, {"Authorization": "Bearer x"})
    try:
        r = await c.request("POST", "/echo", b"hello")
        assert r.status == 200 and r.json() == {"got": "hello", "auth": "Bearer x"}
        first = c._conn
        r = await c.request("POST", "/echo", b"again")
        assert r.json()["got"] == "again" and c._conn is first  # same connection reused
    finally:
        await c.close()


async def test_stale_keepalive_is_replaced(server):
    url, _ = server
    c = HubClient(url)
    try:
        await c.request("POST", "/echo", b"1")
        await asyncio.sleep(0.8)  # the server closes idle keep-alive connections after 0.3 s
        r = await c.request("POST", "/echo", b"2")
        assert r.json()["got"] == "2"
    finally:
        await c.close()


async def test_chunked_close_and_status(server):
    url, _ = server
    c = HubClient(url)
    try:
        assert (await c.request("GET", "/chunked")).body == b"part0;part1;part2;part3;part4;"
        r = await c.request("GET", "/close")
        assert r.body == b"bye" and c._conn is None
        r = await c.request("GET", "/status/503")
        assert r.status == 503 and r.json() == {"error": "nope"}
    finally:
        await c.close()


async def test_timeouts_and_refused(server):
    url, _ = server
    c = HubClient(url, timeout=0.5)
    with pytest.raises(HTTPClientError, match="no answer within"):
        await c.request("GET", "/slow")
    await c.close()
    dead = HubClient("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(HTTPClientError, match="cannot connect"):
        await dead.request("GET", "/")


def test_bad_urls():
    for bad in ("ftp://x", "127.0.0.1:8470", "http://"):
        with pytest.raises(ValueError, match="hub URL"):
            HubClient(bad)
