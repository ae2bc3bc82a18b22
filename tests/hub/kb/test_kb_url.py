"""URL ingest from a real HTTP server on loopback (nothing is fetched unless named)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

import hub.kb as kb


@pytest.fixture
async def site():
    page = ("<html><head><meta charset='iso-8859-1'><title>Caddy reverse proxy</title></head><body>"
            "<nav>menu</nav><main><h1>Caddy reverse proxy</h1><h2>TLS</h2><p>Caddy gets certificates "
            "automatically; caf\xe9 is served as Latin-1.</p></main></body></html>").encode("latin-1")
    app = web.Application()
    state = {"md": "# Grafana\n\n## Provisioning\ndatasources in /etc/grafana/provisioning\n"}

    def route(path, make):
        async def handler(request):
            return make()
        app.router.add_get(path, handler)

    route("/caddy", lambda: web.Response(body=page, content_type="text/html", charset="iso-8859-1"))
    route("/notes/grafana.md", lambda: web.Response(text=state["md"], content_type="text/markdown"))
    route("/logo.png", lambda: web.Response(body=b"\x89PNG", content_type="image/png"))
    route("/big", lambda: web.Response(text="x" * 10_000, content_type="text/plain"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    s = web.TCPSite(runner, "127.0.0.1", 0)
    await s.start()
    port = s._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", state
    await runner.cleanup()


async def test_url_ingest(kbdb, site):
    base, state = site
    urls = [f"{base}/caddy", f"{base}/notes/grafana.md", f"{base}/logo.png", f"{base}/missing", f"{base}/big"]
    loop = asyncio.get_running_loop()
    s = await loop.run_in_executor(None, lambda: kb.add(kbdb, urls, max_bytes=4096))
    assert sorted(src for _, src in s.added) == sorted(urls[:2])
    reasons = dict(s.skipped)
    assert reasons[f"{base}/logo.png"] == "unsupported content type 'image/png'"
    assert reasons[f"{base}/missing"].startswith("HTTP 404")
    assert "too large" in reasons[f"{base}/big"]
    r = kb.search(kbdb, "certificates")
    assert r[0]["title"] == "Caddy reverse proxy" and r[0]["heading_path"] == "Caddy reverse proxy > TLS"
    assert r[0]["source"] == f"{base}/caddy"
    assert "café" in kbdb.execute("SELECT body FROM kb_documents WHERE source = ?", (f"{base}/caddy",)).fetchone()[0]
    again = await loop.run_in_executor(None, lambda: kb.add(kbdb, urls[:2]))
    assert len(again.unchanged) == 2
    state["md"] = "# Grafana\n\n## Alerting\ncontact points for the webhook\n"
    changed = await loop.run_in_executor(None, lambda: kb.add(kbdb, [urls[1]]))
    assert [src for _, src in changed.updated] == [urls[1]]
    assert kb.search(kbdb, "provisioning") == [] and kb.search(kbdb, "webhook")[0]["source"] == urls[1]


async def test_unreachable_url_is_a_reason_not_a_crash(kbdb):
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/nothing"
    s = await asyncio.get_running_loop().run_in_executor(None, lambda: kb.add(kbdb, [url]))
    assert s.skipped and s.skipped[0][0] == url and "cannot fetch" in s.skipped[0][1]
