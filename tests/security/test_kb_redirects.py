"""Finding 13: knowledge-base URL ingest does not follow a redirect into loopback, link-local
or private addresses unless it stays on the host the administrator named."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from hub.kb.ingest import Skip, fetch, internal

SECRET = "credential_hash 74b5e8b7dd33ac70"


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest.fixture
async def servers():
    inner = web.Application()  # stands in for Datasette on the hub
    hits = []

    async def secret(request):
        hits.append(request.path)
        return web.Response(text=f"<html><body><h1>nodes</h1><p>{SECRET}</p></body></html>", content_type="text/html")

    inner.router.add_get("/{tail:.*}", secret)
    inner_runner, inner_port = await serve(inner)
    outer = web.Application()  # the page the administrator named, which redirects

    async def redirect(request):
        raise web.HTTPFound(request.query["to"].replace("PORT", str(inner_port)))

    async def page(request):
        return web.Response(text="<html><body><h1>Runbook</h1><p>restart the thing</p></body></html>",
                            content_type="text/html")

    outer.router.add_get("/go", redirect)
    outer.router.add_get("/page", page)
    outer_runner, outer_port = await serve(outer)
    yield outer_port, inner_port, hits
    await outer_runner.cleanup()
    await inner_runner.cleanup()


@pytest.mark.parametrize("target", ["http://localhost:PORT/homelab/nodes", "http://[::ffff:127.0.0.1]:PORT/x",
                                    "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/admin",
                                    "http://0.0.0.0:PORT/homelab"])
async def test_redirect_into_internal_addresses_is_refused(servers, target):
    outer, _inner, hits = servers
    with pytest.raises(Skip, match="loopback, link-local or private"):
        await asyncio.to_thread(fetch, f"http://127.0.0.1:{outer}/go?to={target}", timeout=10)
    assert hits == []


async def test_redirect_on_the_named_host_and_named_internal_urls_still_work(servers):
    outer, inner, hits = servers
    doc = await asyncio.to_thread(fetch, f"http://127.0.0.1:{outer}/go?to=/page", timeout=10)
    assert "restart the thing" in doc.body
    # the administrator names the internal URL itself: that is their call
    doc = await asyncio.to_thread(fetch, f"http://localhost:{inner}/homelab/nodes", timeout=10)
    assert SECRET in doc.body and hits == ["/homelab/nodes"]


def test_internal_addresses():
    assert internal("127.0.0.1") == "127.0.0.1" and internal("localhost") is not None
    assert internal("192.168.1.1") and internal("fe80::1") and internal("100.100.1.1")
    assert internal("8.8.8.8") is None
