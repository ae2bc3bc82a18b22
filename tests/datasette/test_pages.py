"""Datasette over a real hub database filled through the real ingest path: every stored query
runs and returns the data that went in; the dashboard and search pages render it; a real
headless Chromium loads them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import aiohttp
import pytest
import yaml

from agent import wire
from hub.config import load_settings
from hub.paths import shipped
from hub.server import datasette_argv
from tests.conftest import Proc, free_port, wait_for

METADATA = yaml.safe_load((shipped("datasette") / "metadata.yml").read_text())
QUERIES = METADATA["databases"]["homelab"]["queries"]


def events(now: float) -> list[wire.Event]:
    out: list[wire.Event] = []
    for i in range(30):  # half an hour of metrics, one a minute
        out.append(wire.Metrics(ts=now - 1800 + i * 60, samples={
            "cpu_percent": 10.0 + i, "memory_used_ratio": 0.5, "load1": 0.7,
            'disk_used_ratio{mount="/"}': 0.81, 'disk_used_ratio{mount="/srv"}': 0.42}))
    out += [
        wire.FileChange(ts=now - 600, action="modify", path="/etc/ssh/sshd_config", size=10, mode=0o644, uid=0, gid=0,
                        sha256="b" * 64, old_sha256="a" * 64, content_changed=True, diff="-PermitRootLogin yes\n+PermitRootLogin no\n"),
        wire.Package(ts=now - 500, action="install", manager="dpkg", name="htop", version="3.2.2-2"),
        wire.Service(ts=now - 400, unit="nginx.service", active="failed", sub="failed", result="exit-code", restarts=3, previous="active"),
        wire.Device(ts=now - 300, action="add", subsystem="block", sys_path="/devices/usb1/1-1/block/sdb", devtype="disk",
                    dev_node="/dev/sdb", vendor="SanDisk", model="Cruzer", serial="4C530001", bus="usb", source="kernel"),
        wire.PendingUpdates(ts=now - 200, manager="apt", updates=[wire.PendingUpdate("openssl", "3.0.1", "3.0.2", True)]),
        wire.Processes(ts=now - 100, top=[wire.Proc(1234, "postgres", "postgres", 12.5, 200 * 2**20, "postgres -D /var/lib/pg")]),
        wire.Notice(ts=now - 50, source="services", level="info", message="stepping aside: no systemd"),
        wire.Command(ts=now - 40, command="grep -r PermitRootLogin /etc/ssh", cwd="/root", user="root", exit_code=0, duration_ms=5),
        wire.Log(ts=now - 30, source="/var/log/auth.log", program="sshd", pid=42, severity=6,
                 message="Accepted publickey for alice from 192.168.1.20 port 50000 ssh2"),
        wire.CheckResult(ts=now - 20, name="site", type="http", target="https://nas.lan/", ok=False,
                         latency_ms=12.5, status=502, error="HTTP 502", cert_days=40.0),
        wire.Container(ts=now - 10, name="jellyfin", id="abc", image="jellyfin/jellyfin", state="running",
                       health="healthy", restarts=2),  # healthy: no alert, so no model at work
    ]
    return out


@pytest.fixture
async def filled_hub(hub):
    token = hub.enroll("nas")
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{hub.url}/v1/join", json={"token": token}) as r:
            cred = (await r.json())["credential"]
        now = time.time()
        body = wire.encode_batch("nas", now, [(i, wire.encode_event(e)) for i, e in enumerate(events(now), 1)])
        async with s.post(f"{hub.url}/v1/ingest", data=body, headers={"Authorization": f"Bearer {cred}"}) as r:
            assert r.status == 200, await r.text()
    hub.enroll("laptop")  # enrolled, never seen
    return hub


@pytest.fixture
def datasette(filled_hub, tmp_path):
    port = free_port()
    settings = load_settings(data_dir=filled_hub.data_dir)
    p = Proc(datasette_argv(settings, port), tmp_path / "datasette.log")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _get(f"{base}/-/versions.json") is not None or not p.alive(), 60, what="datasette")
    assert p.alive(), p.output()
    yield base
    p.terminate()


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read()
    except OSError:
        return None


def rows(base: str, query: str, **params) -> list[dict]:
    qs = urllib.parse.urlencode({"_shape": "array", **params})
    body = _get(f"{base}/homelab/{query}.json?{qs}")
    assert body is not None, f"{query} failed"
    return json.loads(body)


def test_every_stored_query_runs(datasette):
    assert len(QUERIES) >= 18
    for name, q in sorted(QUERIES.items()):
        params = {p: "" for p in re.findall(r":(\w+)", q["sql"])}
        if "name" in params:
            params["name"] = "cpu_percent"
        assert isinstance(rows(datasette, name, **params), list), name


def test_stored_queries_return_what_went_in(datasette):
    health = {r["node"]: r for r in rows(datasette, "node_health")}
    assert health["nas"]["state"] == "online" and health["laptop"]["state"] == "never seen"
    assert health["nas"]["fullest_disk_pct"] == 81.0
    disks = rows(datasette, "disks")
    assert [(d["mount"], d["used_pct"]) for d in disks] == [("/", 81.0), ("/srv", 42.0)]
    changed = rows(datasette, "what_changed", node="nas", since="")
    assert {(c["kind"], c["subject"]) for c in changed} >= {
        ("file", "/etc/ssh/sshd_config"), ("package", "htop"), ("service", "nginx.service"),
        ("device", "/devices/usb1/1-1/block/sdb")}
    assert [r["name"] for r in rows(datasette, "installed_this_week")] == ["htop"]
    assert [r["unit"] for r in rows(datasette, "failed_units")] == ["nginx.service"]
    assert [r["name"] for r in rows(datasette, "security_updates")] == ["openssl"]
    assert [r["model"] for r in rows(datasette, "devices_plugged_in", subsystem="block", days="")] == ["Cruzer"]
    assert [r["name"] for r in rows(datasette, "top_processes")] == ["postgres"]
    touched = rows(datasette, "commands_touching_path", path="/etc/ssh")
    assert [r["command"] for r in touched] == ["grep -r PermitRootLogin /etc/ssh"]
    assert rows(datasette, "commands_touching_path", path="/srv") == []
    assert [(r["name"], r["ok"], r["uptime_pct"]) for r in rows(datasette, "checks_now")] == [("site", 0, 0.0)]
    assert [r["error"] for r in rows(datasette, "check_history", node="nas", name="site", hours="")] == ["HTTP 502"]
    assert [(r["name"], r["health"]) for r in rows(datasette, "containers_now")] == [("jellyfin", "healthy")]
    hist = rows(datasette, "metric_history", name="cpu_percent", node="nas", hours="")
    assert hist == [] or all(h["node"] == "nas" for h in hist)  # 1-minute rollups lag by two minutes


def test_dashboard_and_search_pages(datasette):
    page = _get(f"{datasette}/-/dashboard").decode()
    assert "Fleet dashboard" in page and "nas" in page and "laptop" in page
    assert page.count('<svg class="chart"') == 4 and "<polyline" in page  # charts drawn from the raw samples
    assert "cdn" not in page.lower()  # nothing fetched from elsewhere
    found = _get(f"{datasette}/-/search?q=PermitRootLogin").decode()
    assert "/etc/ssh/sshd_config" in found


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed (tests/run installs it as root)")
def test_headless_chromium_renders_dashboard_and_a_stored_query(datasette, tmp_path):
    def dom(url: str) -> str:
        r = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", url],
            capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    page = dom(f"{datasette}/-/dashboard")
    assert "<polyline" in page and "nas" in page
    table = dom(f"{datasette}/homelab/failed_units")
    assert "nginx.service" in table and "exit-code" in table
    shot = tmp_path / "dashboard.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}", "--window-size=1280,900",
                    f"{datasette}/-/dashboard"], capture_output=True, timeout=90)
    assert shot.exists() and shot.stat().st_size > 10_000
