"""The hub's own pages over real HTTP on a hub seeded through the real ingest path: the data
endpoint reads the right tier and covers the range, pages render without JavaScript, and the
administrator-only and Host rules hold."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest

from hub.dashboard import access, series
from hub.kb.token import admin_token
from tests.dashboard.seed import NODES


async def _get(url, **kw):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        async with s.get(url, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r.headers


@pytest.mark.parametrize("rng,tier", [("1h", "samples"), ("6h", "samples"), ("24h", "samples_1m"),
                                      ("7d", "samples_1m"), ("30d", "samples_1h"), ("1y", "samples_1h")])
async def test_series_reads_the_tier_for_the_range(fleet, rng, tier):
    status, body, _ = await _get(f"{fleet.url}/dashboard/api/nodes/nas01/series?range={rng}")
    assert status == 200, body
    data = json.loads(body)
    assert data["tier"] == tier
    assert len(data["ts"]) <= series.MAX_POINTS + 1
    charts = {c["id"]: c for c in data["charts"]}
    assert set(charts) == {"cpu", "memory", "disk", "load", "net", "diskio", "temp"}
    assert [line["label"] for line in charts["disk"]["lines"]] == ["/", "/srv"]
    span = data["end"] - data["start"]
    first = data["ts"][0] - data["start"]
    # the data reaches both ends of the range (the 1y view has only the month that exists)
    assert data["end"] - data["ts"][-1] < max(2 * data["bucket"], 600), (rng, data["ts"][-1])
    if rng != "1y":
        assert first < max(2 * data["bucket"], 0.05 * span), (rng, first)
    values = [v for v in charts["cpu"]["lines"][0]["values"] if v is not None]
    assert len(values) > 0.8 * len(data["ts"])
    # ratios come back as percent; /srv on nas01 fills to ~95% by now
    srv = [v for v in charts["disk"]["lines"][1]["values"] if v is not None]
    assert 90 < srv[-1] <= 96


async def test_alerts_and_changes_come_with_the_series_as_time_marks(fleet):
    status, body, _ = await _get(f"{fleet.url}/dashboard/api/nodes/nas01/series?range=30d")
    marks = json.loads(body)["marks"]
    kinds = {m["kind"] for m in marks}
    assert {"alert", "package", "file", "service"} <= kinds, marks
    assert any(m["kind"] == "alert" and m["text"].startswith("disk-almost-full") for m in marks)
    assert [m["ts"] for m in marks] == sorted(m["ts"] for m in marks)
    status, body, _ = await _get(f"{fleet.url}/dashboard/api/nodes/nas01/series?range=1h")
    # the nginx failure (30 min ago) and its alert, not the file (2 h) or package (3 d) changes
    assert {m["kind"] for m in json.loads(body)["marks"]} == {"alert", "service"}


async def test_zoom_reads_a_finer_tier(fleet):
    now = time.time()
    status, body, _ = await _get(
        f"{fleet.url}/dashboard/api/nodes/nas01/series?from={int(now - 3 * 3600)}&to={int(now)}")
    assert status == 200 and '"tier":"samples"' in body


@pytest.mark.parametrize("query,needle", [("range=2w", "range must be one of"),
                                          ("from=abc&to=1", "from and to must be Unix seconds"),
                                          ("from=10&to=5", "from must be before to")])
async def test_series_bad_input_is_named(fleet, query, needle):
    status, body, _ = await _get(f"{fleet.url}/dashboard/api/nodes/nas01/series?{query}")
    assert status == 400 and needle in body


async def test_unknown_node_suggests_the_closest(fleet):
    status, body, _ = await _get(f"{fleet.url}/dashboard/api/nodes/nas/series?range=1h")
    assert status == 404 and "no node 'nas'; did you mean nas01?" in body
    status, body, _ = await _get(f"{fleet.url}/nodes/nas")
    assert status == 404 and "did you mean nas01?" in body


async def test_home_page_without_javascript(fleet):
    status, body, headers = await _get(f"{fleet.url}/")
    assert status == 200
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert '<meta http-equiv="refresh"' in body
    for name in NODES:
        assert f'href="/nodes/{name}"' in body and f">{name}</a>" in body
    assert "nginx.service" in body and "/etc/ssh/sshd_config" in body  # recent changes
    assert "<script" not in body


async def test_node_page_without_javascript(fleet):
    status, body, _ = await _get(f"{fleet.url}/nodes/nas01?range=30d")
    assert status == 200
    for r in series.RANGES:
        assert f'href="?range={r}"' in body
    assert 'class="current" aria-current="true">30d<' in body
    assert "samples_1h" in body and "Disk use per mount" in body
    assert "<noscript><meta http-equiv=\"refresh\"" in body
    assert "package openssl" not in body or "upgrade" in body


async def test_strangers_need_the_admin_token(fleet, monkeypatch):
    # Pretend the peer is on the tailnet, not loopback.
    monkeypatch.setattr(access, "is_loopback", lambda request: False)
    status, _, headers = await _get(f"{fleet.url}/nodes/nas01")
    assert status == 303 and headers["Location"].startswith("/login?next=")
    status, body, _ = await _get(f"{fleet.url}/dashboard/api/nodes/nas01/series")
    assert status == 401 and "nas01" not in body
    token = admin_token(fleet.data_dir)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.post(f"{fleet.url}/login", data={"token": "hla_wrong", "next": "/"}) as r:
            assert r.status == 401
        async with s.post(f"{fleet.url}/login", data={"token": token, "next": "//evil.example/"},
                          allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/"
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
        async with s.get(f"{fleet.url}/nodes/nas01", allow_redirects=False) as r:
            assert r.status == 200
        async with s.post(f"{fleet.url}/login", data={"token": token},
                          headers={"Origin": "http://evil.example"}, allow_redirects=False) as r:
            assert r.status == 403


async def test_dns_rebinding_host_is_refused(fleet):
    status, body, _ = await _get(f"{fleet.url}/", headers={"Host": "evil.example:8470"})
    assert status == 421 and "nas01" not in body
    for host in ("localhost:1", "127.0.0.1", "[::1]:8470"):
        status, _, _ = await _get(f"{fleet.url}/", headers={"Host": host})
        assert status == 200, host


async def test_vendored_chart_library_is_served(fleet):
    status, body, headers = await _get(f"{fleet.url}/dashboard/static/uPlot.iife.min.js")
    assert status == 200 and "uPlot" in body
    status, _, _ = await _get(f"{fleet.url}/dashboard/static/..%2fweb.py")
    assert status == 404


async def test_docs_are_served_offline(fleet):
    status, body, _ = await _get(f"{fleet.url}/docs/")
    assert status == 200 and 'href="/docs/dashboard.md"' in body and 'href="/docs/rules.md"' in body
    status, body, _ = await _get(f"{fleet.url}/docs/dashboard.md")
    assert status == 200 and "<h1>The hub" in body and "s pages</h1>" in body and 'src="img/node.png"' in body
    async with aiohttp.ClientSession() as s, s.get(f"{fleet.url}/docs/img/node.png") as r:
        assert r.status == 200 and r.headers["Content-Type"] == "image/png"
        assert (await r.read()).startswith(b"\x89PNG")
    for bad in ("..%2fREADME.md", "generate.py", ".hidden.md"):
        status, _, _ = await _get(f"{fleet.url}/docs/{bad}")
        assert status == 404, bad
    status, body, _ = await _get(f"{fleet.url}/")
    assert 'href="/docs/"' in body
