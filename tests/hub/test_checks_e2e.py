"""Active checks end to end: a real agent subprocess checks a TLS server on loopback whose
self-signed certificate expires in 5 days and a closed port; the hub projects the results and
the shipped rules (rules/checks.yaml) fire. The hub's own checks take the same path."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import Proc, async_wait_for, free_port, join_agent
from tests.hub.rules.rules_fixtures import rules_hub  # noqa: F401 - fixture

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
from checks_servers import Site, self_signed, server_ctx  # noqa: E402


@pytest.fixture
async def tls_site(tmp_path):
    crt, key = self_signed(tmp_path, days=5)
    s = await Site().start(server_ctx(crt, key))
    yield s
    await s.stop()


def the_checks(tls_port: int, closed_port: int) -> list[dict]:
    return [
        {"name": "web-cert", "type": "tls", "target": f"localhost:{tls_port}", "verify": False, "interval": 1},
        {"name": "site", "type": "http", "target": f"https://localhost:{tls_port}/ok", "verify": False,
         "expect_text": "nominal", "interval": 1},
        {"name": "db", "type": "tcp", "target": f"127.0.0.1:{closed_port}", "interval": 1},
    ]


async def test_agent_checks_reach_the_twin_and_the_shipped_rules(rules_hub, tmp_path, tls_site):  # noqa: F811
    h = await rules_hub()  # the shipped rules only
    state = tmp_path / "agent"
    from tests.conftest import enroll

    await asyncio.to_thread(join_agent, h.url, enroll(h.data_dir, "n1"), state)
    env = {"HOMELAB_AGENT_CHECKS": json.dumps(the_checks(tls_site.port, free_port()))}
    agent = Proc([sys.executable, "-m", "agent", "run", "--state-dir", str(state), "--collectors", "checks"],
                 tmp_path / "agent.log", env)
    try:
        await async_wait_for(lambda: len(h.query("SELECT 1 FROM checks WHERE node = 'n1'")) == 3, 60,
                             what="three checks in the checks table")
        await async_wait_for(lambda: h.query(
            "SELECT 1 FROM alerts WHERE rule = 'certificate-expiring' AND state = 'firing' AND node = 'n1'"),
            60, what="certificate-expiring firing")
        await async_wait_for(lambda: h.query(
            "SELECT 1 FROM alerts WHERE rule = 'check-down' AND state = 'pending' AND node = 'n1'"),
            60, what="check-down pending for the closed port")
        await async_wait_for(lambda: h.query(
            "SELECT count(*) FROM check_results WHERE node = 'n1' AND name = 'web-cert'")[0][0] >= 2,
            60, what="history of the tls check")
    finally:
        await asyncio.to_thread(agent.terminate)
    rows = {r[0]: r[1:] for r in h.query(
        "SELECT name, ok, status, error, cert_days, latency_ms FROM checks WHERE node = 'n1'")}
    assert rows["web-cert"][0] == 1 and 4.9 < rows["web-cert"][3] < 5.01
    assert rows["site"][:3] == (1, 200, None) and 4.9 < rows["site"][3] < 5.01
    assert rows["db"][0] == 0 and "ConnectionRefusedError" in rows["db"][2] and rows["db"][4] > 0
    (summary,) = h.query("SELECT summary FROM alerts WHERE rule = 'certificate-expiring' AND labels LIKE '%web-cert%'")[0]
    assert summary in [f"the certificate of localhost:{tls_site.port} (web-cert) expires in {d} days"
                       for d in (4, 5)]  # 5 days less the seconds since it was made
    (down,) = h.query("SELECT count(*) FROM checks_down WHERE node = 'n1'")[0]
    assert down == 1
    # the node page: state and since, the expiry day, outages; not the jittery latency
    from hub.docs import pages
    from hub.store import connect

    db = connect(h.data_dir / "homelab.db", readonly=True)
    try:
        page = pages.node_page(db, "n1")
        again = pages.node_page(db, "n1")
    finally:
        db.close()
    section = page.split("## Active checks")[1].split("## ")[0]
    assert f"| web-cert | tls | localhost:{tls_site.port} | up since " in section
    assert "| db | tcp | 127.0.0.1:" in section and "| DOWN since " in section
    (db_line,) = [line for line in section.splitlines() if line.startswith("| db |")]
    assert "ConnectionRefusedError" in db_line and db_line.endswith("|  | 1 |")  # no cert, 1 outage
    assert page == again


async def test_hub_runs_its_own_checks_as_a_node(rules_hub, tmp_path, tls_site):  # noqa: F811
    h = await rules_hub(checks=the_checks(tls_site.port, free_port()))
    await async_wait_for(lambda: len(h.query("SELECT 1 FROM checks WHERE node = 'hub'")) == 3, 60,
                         what="the hub's check results")
    await async_wait_for(lambda: h.query(
        "SELECT 1 FROM alerts WHERE rule = 'certificate-expiring' AND state = 'firing' AND node = 'hub'"),
        60, what="certificate-expiring on the hub's own check")
    assert h.query("SELECT credential_hash FROM nodes WHERE name = 'hub'") == [(None,)]
    # and for Prometheus, as blackbox_exporter's probe_success would be
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(f"{h.url}/metrics") as r:
        text = await r.text()
    assert 'homelab_check_up{check="db",node="hub",type="tcp"} 0.0' in text
    assert 'homelab_check_up{check="web-cert",node="hub",type="tls"} 1.0' in text
    days = re.search(r'homelab_check_cert_days\{check="web-cert",node="hub",type="tls"\} (\S+)', text)
    assert days and 4.9 < float(days.group(1)) <= 5.0
    assert 'homelab_check_latency_ms{check="site",node="hub",type="http"}' in text
    assert "homelab_notify_outbox" in text


async def test_hub_checks_refuse_an_enrolled_node_name(rules_hub, tmp_path):  # noqa: F811
    from agent.settings import SettingsError

    data_dir = tmp_path / "hubx"
    first = await rules_hub(data_dir=data_dir)
    await first.join("hub")
    await first.runner.cleanup()
    with pytest.raises(SettingsError, match="'hub' is an enrolled agent"):
        await rules_hub(data_dir=data_dir, checks=[{"name": "x", "type": "dns", "target": "localhost"}])
