"""Notifications to a local webhook (with retries) and to a real Alertmanager (Debian's
prometheus-alertmanager, started here on loopback): push, then read back over API v2."""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.request

import aiohttp
import pytest
from aiohttp import web
from rules_fixtures import rules_hub  # noqa: F401 - fixture

from agent import wire
from tests.conftest import Proc, async_wait_for, free_port, wait_for

AM = "/usr/bin/prometheus-alertmanager"
RULES = """\
rules:
  - name: sudoers-touched
    severity: critical
    event:
      kind: file
      where: {path: /etc/sudoers}
    group_by: [node, path]
    keep_firing_for: 2s
    labels: {team: homelab}
    annotations: {summary: "{{ path }} {{ action }} on {{ node }}"}
"""


def rules_dir(tmp_path):
    d = tmp_path / "rules"
    d.mkdir()
    (d / "r.yaml").write_text(RULES)
    return d


def touched() -> wire.FileChange:
    return wire.FileChange(ts=time.time(), action="modify", path="/etc/sudoers")


async def test_webhook_retries_until_delivered(rules_hub, tmp_path):  # noqa: F811
    got, attempts = [], []

    async def hook(request):
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            return web.Response(status=503)  # a receiver that is restarting
        got.extend(a for a in await request.json() if a["rule"] == "sudoers-touched")  # not the shipped rules
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        h = await rules_hub(rules_dir=rules_dir(tmp_path), webhooks=[f"http://127.0.0.1:{port}/hook"])
        await h.send("n1", [touched()])
        await async_wait_for(lambda: any(a["transition"] == "firing" for a in got), 40, what="firing webhook")
        await async_wait_for(lambda: any(a["transition"] == "resolved" for a in got), 40, what="resolved webhook")
    finally:
        await runner.cleanup()
    assert len(attempts) >= 3
    firing = next(a for a in got if a["transition"] == "firing")
    assert firing["rule"] == "sudoers-touched" and firing["node"] == "n1" and firing["severity"] == "critical"
    assert firing["annotations"] == {"summary": "/etc/sudoers modify on n1"}
    assert firing["labels"]["team"] == "homelab" and firing["fields"] == {"node": "n1", "path": "/etc/sudoers"}
    resolved = next(a for a in got if a["transition"] == "resolved")
    assert resolved["id"] == firing["id"] and resolved["resolved_at"] is not None


@pytest.fixture
def alertmanager(tmp_path):
    if not shutil.which(AM):
        pytest.skip("prometheus-alertmanager is not installed (tests/run installs it)")
    cfg = tmp_path / "am.yml"
    cfg.write_text("route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n")
    port = free_port()
    p = Proc([AM, f"--config.file={cfg}", f"--storage.path={tmp_path / 'am-data'}",
              f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="], tmp_path / "am.log")

    def ready():
        if not p.alive():
            raise AssertionError(f"alertmanager exited: {p.output()[-1500:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(ready, 30, 0.2, "alertmanager ready")
    yield f"http://127.0.0.1:{port}"
    p.terminate()


async def test_alertmanager_receives_firing_then_resolved(rules_hub, tmp_path, alertmanager):  # noqa: F811
    h = await rules_hub(rules_dir=rules_dir(tmp_path), alertmanager_url=alertmanager)
    await h.send("n1", [touched()])

    async def am_alerts():
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{alertmanager}/api/v2/alerts") as r:
                assert r.status == 200
                return [a for a in await r.json() if a["labels"].get("alertname") == "sudoers-touched"]

    found = []

    async def poll():
        found[:] = await am_alerts()
        return found

    deadline = time.monotonic() + 40
    while not await poll():
        assert time.monotonic() < deadline, "alert never reached Alertmanager"
        await asyncio.sleep(0.2)
    (a,) = found
    assert a["labels"] == {"alertname": "sudoers-touched", "severity": "critical", "node": "n1",
                           "path": "/etc/sudoers", "team": "homelab"}
    assert a["annotations"] == {"summary": "/etc/sudoers modify on n1"}
    (alert_id,) = h.query("SELECT id FROM alerts WHERE rule = 'sudoers-touched'")[0]
    assert a["generatorURL"].endswith(f"/alerts/{alert_id}")
    assert a["status"]["state"] == "active"
    # keep_firing_for is 2s: the hub resolves it and tells Alertmanager, which drops it
    deadline = time.monotonic() + 40
    while await poll():
        assert time.monotonic() < deadline, f"alert not resolved in Alertmanager: {found}"
        await asyncio.sleep(0.3)
    assert h.query("SELECT state FROM alerts WHERE rule = 'sudoers-touched'") == [("resolved",)]
