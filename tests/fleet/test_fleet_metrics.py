"""/metrics over real HTTP: host series with node labels, node state, hub health, auth."""

from __future__ import annotations

import time

import aiohttp
from fleetlib import join, send
from prometheus_client.parser import text_string_to_metric_families

from agent import wire
from hub.metrics.web import parse_labels


async def scrape(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{url}/metrics", headers=headers) as r:
            return r.status, await r.text()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_parse_labels_escapes_and_reserved_names():
    assert parse_labels('mount="/",iface="eth0"') == {"mount": "/", "iface": "eth0"}
    assert parse_labels(r'path="/a \"b\"",node="x"') == {"path": '/a "b"', "exported_node": "x"}
    assert parse_labels("") == {}


async def test_metrics_serves_latest_host_series_and_hub_health(hub):
    cred = await join(hub, "nas")
    now = time.time()
    evs = [
        (1, wire.Metrics(ts=now - 20, samples={"cpu_percent": 10.0, 'disk_used_ratio{mount="/"}': 0.5})),
        (2, wire.Metrics(ts=now - 10, samples={"cpu_percent": 42.5, 'disk_used_ratio{mount="/"}': 0.61})),
    ]
    status, body = await send(hub, cred, "nas", evs, sent=now + 3.0, headers={"Homelab-Spool-Backlog": "17"})
    assert status == 200 and body["ack"] == 2
    status, text = await scrape(hub.url)
    assert status == 200
    got = samples(text)
    assert got[("homelab_cpu_percent", frozenset({("node", "nas")}))] == 42.5
    assert got[("homelab_disk_used_ratio", frozenset({("node", "nas"), ("mount", "/")}))] == 0.61
    assert got[("homelab_node_up", frozenset({("node", "nas")}))] == 1.0
    assert got[("homelab_node_spool_backlog_events", frozenset({("node", "nas")}))] == 17
    assert got[("homelab_node_last_seq", frozenset({("node", "nas")}))] == 2
    assert 2.0 < got[("homelab_node_clock_skew_seconds", frozenset({("node", "nas")}))] < 4.0
    assert got[("homelab_hub_ingest_total", frozenset({("what", "events")}))] == 2
    assert got[("homelab_hub_database_bytes", frozenset())] > 0
    assert ("homelab_hub_writer_queue_depth", frozenset()) in got
    # the values are the database's latest, not something cached on the side
    db_value = hub.query("SELECT value FROM metrics_latest WHERE node='nas' AND name='cpu_percent'")[0][0]
    assert db_value == 42.5


async def test_metrics_seeded_from_database_after_restart(hub):
    cred = await join(hub, "n1")
    await send(hub, cred, "n1", [(1, wire.Metrics(ts=time.time(), samples={"load1": 1.25}))])
    # a second app over the same data dir starts with what is stored
    from aiohttp import web

    from hub.app import create_app
    from hub.config import load_settings

    app = create_app(load_settings(data_dir=hub.data_dir))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        status, text = await scrape(f"http://127.0.0.1:{port}")
        assert samples(text)[("homelab_load1", frozenset({("node", "n1")}))] == 1.25
    finally:
        await runner.cleanup()


async def test_metrics_token(hub, monkeypatch):
    from hub.keys import SETTINGS

    hub.app[SETTINGS].metrics_token = "s3cret"
    status, text = await scrape(hub.url)
    assert status == 401 and "metrics_token" in text
    assert (await scrape(hub.url, "wrong"))[0] == 401
    status, text = await scrape(hub.url, "s3cret")
    assert status == 200 and "homelab_hub_database_bytes" in text


async def test_a_node_cannot_shadow_the_hubs_own_metrics(hub):
    cred = await join(hub, "evil")
    hostile = {"node_up": 5.0, "hub_database_bytes": 1.0, "alerts": 3.0, "cpu_percent": 1.0,
               'weird{node="other",job="x",a-b="c\\"d"}': 2.0}
    assert (await send(hub, cred, "evil", [(1, wire.Metrics(ts=time.time(), samples=hostile))]))[0] == 200
    status, text = await scrape(hub.url)
    assert status == 200
    got = samples(text)  # parses: no family defined twice
    assert got[("homelab_node_up", frozenset({("node", "evil")}))] == 1.0
    assert got[("homelab_cpu_percent", frozenset({("node", "evil")}))] == 1.0
    weird = [(k, v) for k, v in got.items() if k[0] == "homelab_weird"]
    assert len(weird) == 1 and dict(weird[0][0][1])["node"] == "evil"
    assert dict(weird[0][0][1])["exported_node"] == "other"
