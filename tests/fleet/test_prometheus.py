"""A real Prometheus (the Debian package) scrapes the hub on loopback; PromQL answers with
the values stored in the hub's database."""

from __future__ import annotations

import asyncio
import shutil
import time

import aiohttp
import pytest
from fleetlib import Proc, free_port, join, send

from agent import wire

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
pytestmark = pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus is not installed (tests/run installs it)")


async def promql(base: str, expr: str) -> list[dict]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/api/v1/query", params={"query": expr}) as r:
            body = await r.json()
            assert body["status"] == "success", body
            return body["data"]["result"]


@pytest.fixture
def prometheus(tmp_path):
    procs = []

    def start(target_port: int) -> str:
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: homelab\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
        )
        p = Proc([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                 tmp_path / "prometheus.log")
        procs.append(p)
        return f"http://127.0.0.1:{port}"

    yield start
    for p in procs:
        p.terminate()


async def test_prometheus_scrapes_hub_and_promql_returns_db_values(hub, prometheus):
    creds = {n: await join(hub, n) for n in ("alpha", "beta")}
    now = time.time()
    for i, (node, cred) in enumerate(creds.items()):
        status, _ = await send(hub, cred, node, [
            (1, wire.Metrics(ts=now - 5, samples={"cpu_percent": 11.0 + i, 'disk_used_ratio{mount="/"}': 0.25 + i / 10,
                                                  "memory_used_ratio": 0.5})),
        ])
        assert status == 200
    base = prometheus(hub.port)

    async def up():
        try:
            r = await promql(base, 'up{job="homelab"}')
        except (aiohttp.ClientError, AssertionError):
            return False
        return r and r[0]["value"][1] == "1"

    deadline = time.monotonic() + 30
    while not await up():
        assert time.monotonic() < deadline, "Prometheus never scraped the hub"
        await asyncio.sleep(0.3)

    db = dict(hub.query("SELECT node, value FROM metrics_latest WHERE name = 'disk_used_ratio' AND labels = 'mount=\"/\"'"))
    assert set(db) == {"alpha", "beta"}
    res = await promql(base, 'homelab_disk_used_ratio{mount="/"}')
    got = {r["metric"]["node"]: float(r["value"][1]) for r in res}
    assert got == db

    # a new sample reaches Prometheus on the next scrape
    await send(hub, creds["alpha"], "alpha", [(2, wire.Metrics(ts=time.time(), samples={"cpu_percent": 77.5}))])
    want = hub.query("SELECT value FROM metrics_latest WHERE node = 'alpha' AND name = 'cpu_percent'")[0][0]
    assert want == 77.5

    async def newest():
        r = await promql(base, 'homelab_cpu_percent{node="alpha"}')
        return r and float(r[0]["value"][1]) == want

    await async_wait_for_async(newest, 15)
    # hub health is queryable too
    r = await promql(base, 'homelab_hub_ingest_total{what="events"}')
    assert float(r[0]["value"][1]) == hub.query("SELECT count(*) FROM events")[0][0]
    r = await promql(base, "sum(homelab_node_up)")
    assert float(r[0]["value"][1]) == 2.0

    # every query of the shipped Grafana dashboard is valid PromQL for this Prometheus, and the
    # per-node host panels have data
    import json

    from test_grafana import GRAFANA, prometheus_exprs

    dash = json.loads((GRAFANA / "fleet.json").read_text())
    for expr in prometheus_exprs(dash):
        if expr.startswith("label_values("):
            continue  # a Grafana templating function, not PromQL
        res = await promql(base, expr.replace("$node", ".+"))
        if "homelab_cpu_percent" in expr or "homelab_disk_used_ratio" in expr:
            assert res, f"no data for dashboard query {expr}"


async def async_wait_for_async(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, "timed out waiting for Prometheus to see the new sample"
        await asyncio.sleep(0.3)
