"""`homelab-hub tailnet sync` against a loopback stand-in for Tailscale's HTTP API
(GET /api/v2/tailnet/{tailnet}/devices, POST /api/v2/oauth/token), through the tailscale package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web
from fleetlib import enroll, free_port

from hub.store import open_db
from hub.tailnet.local import Identity

DEVICES = {"devices": [
    {"id": "1001", "nodeId": "nLAPTOPCNTRL", "hostname": "Alices-MacBook", "name": "laptop.tail1234.ts.net",
     "addresses": ["100.64.0.5", "fd7a:115c:a1e0::5"], "os": "macOS", "user": "alice@example.com",
     "lastSeen": "2026-01-01T10:00:00Z", "authorized": True},
    {"id": "1002", "nodeId": "nNASCNTRL", "hostname": "nas", "name": "nas.tail1234.ts.net",
     "addresses": ["100.64.0.6"], "os": "linux", "user": "alice@example.com", "authorized": True},
    {"id": "1003", "nodeId": "nPHONECNTRL", "hostname": "pixel", "name": "pixel.tail1234.ts.net",
     "addresses": ["100.64.0.9"], "os": "android", "user": "alice@example.com", "authorized": True},
]}


class FakeAPI:
    def __init__(self):
        self.seen: list[tuple[str, str, str]] = []  # method, path+query, auth

    async def devices(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, str(request.rel_url), request.headers.get("Authorization", "")))
        if request.headers.get("Authorization") not in ("Bearer tskey-api-test", "Bearer oauth-access-1"):
            return web.json_response({"message": "API token invalid"}, status=401)
        assert request.match_info["tailnet"] == "example.com"
        return web.json_response(DEVICES)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.seen.append((request.method, str(request.rel_url), ""))
        if form.get("client_id") == "kOAUTH" and form.get("client_secret") == "tskey-client-secret":
            return web.json_response({"access_token": "oauth-access-1", "expires_in": 3600, "token_type": "Bearer"})
        return web.json_response({"message": "invalid client"}, status=401)


@pytest.fixture
def fake_api():
    """The stand-in runs in its own thread (the CLI under test is a subprocess)."""
    import asyncio

    api = FakeAPI()
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner_box = {}

    async def start():
        app = web.Application()
        app.router.add_get("/api/v2/tailnet/{tailnet}/devices", api.devices)
        app.router.add_post("/api/v2/oauth/token", api.token)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runner_box["r"] = runner
        ready.set()

    t = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    t.start()
    assert ready.wait(10)
    api.url = f"http://127.0.0.1:{port}"
    yield api
    asyncio.run_coroutine_threadsafe(runner_box["r"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)
    loop.close()


def run_sync(data_dir: Path, env: dict, extra: tuple = ("--json",)) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    return subprocess.run([sys.executable, "-m", "hub", "tailnet", "sync", *extra, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60, env={**base, **env})


def setup_nodes(data_dir: Path) -> None:
    enroll(data_dir, "laptop")
    enroll(data_dir, "nas")
    enroll(data_dir, "oldbox")
    db = open_db(data_dir / "homelab.db")
    db.execute("UPDATE nodes SET tailnet_identity = ?, last_seen = ? WHERE name = 'laptop'",
               (Identity("nLAPTOPCNTRL", "laptop.tail1234.ts.net", "alice@example.com").to_text(), time.time()))
    db.close()


def test_sync_with_api_key(tmp_path, fake_api):
    setup_nodes(tmp_path)
    r = run_sync(tmp_path, {"HOMELAB_HUB_TAILSCALE_API_KEY": "tskey-api-test", "HOMELAB_HUB_TAILNET": "example.com",
                            "HOMELAB_HUB_TAILSCALE_API_URL": fake_api.url})
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    enrolled = {d["node"]: d for d in rep["enrolled"]}
    assert set(enrolled) == {"laptop", "nas"}
    assert enrolled["laptop"]["matched_by"] == "identity"  # hostname differs; the recorded id matches
    assert enrolled["nas"]["matched_by"] == "name"
    assert [d["name"] for d in rep["not_enrolled"]] == ["pixel.tail1234.ts.net"]
    assert {n["node"] for n in rep["not_seen"]} == {"nas", "oldbox"}
    assert rep["not_on_tailnet"] == ["oldbox"]
    assert fake_api.seen[0][:2] == ("GET", "/api/v2/tailnet/example.com/devices?fields=all")


def test_sync_with_oauth_client(tmp_path, fake_api):
    setup_nodes(tmp_path)
    r = run_sync(tmp_path, {"HOMELAB_HUB_TAILSCALE_OAUTH_CLIENT_ID": "kOAUTH",
                            "HOMELAB_HUB_TAILSCALE_OAUTH_CLIENT_SECRET": "tskey-client-secret",
                            "HOMELAB_HUB_TAILNET": "example.com", "HOMELAB_HUB_TAILSCALE_API_URL": fake_api.url})
    assert r.returncode == 0, r.stderr
    assert [m for m, p, _ in fake_api.seen] == ["POST", "GET"]
    assert len(json.loads(r.stdout)["enrolled"]) == 2


def test_sync_errors_are_clear(tmp_path, fake_api):
    r = run_sync(tmp_path, {})
    assert r.returncode != 0 and "tailscale_api_key" in r.stderr
    r = run_sync(tmp_path, {"HOMELAB_HUB_TAILSCALE_API_KEY": "wrong", "HOMELAB_HUB_TAILNET": "example.com",
                            "HOMELAB_HUB_TAILSCALE_API_URL": fake_api.url})
    assert r.returncode != 0 and "Tailscale API" in r.stderr and "invalid" in r.stderr
    assert "wrong" not in r.stderr  # the secret is not echoed


def test_sync_table_output(tmp_path, fake_api):
    setup_nodes(tmp_path)
    r = run_sync(tmp_path, {"HOMELAB_HUB_TAILSCALE_API_KEY": "tskey-api-test", "HOMELAB_HUB_TAILNET": "example.com",
                            "HOMELAB_HUB_TAILSCALE_API_URL": fake_api.url, "COLUMNS": "200"}, extra=())
    assert r.returncode == 0, r.stderr
    assert "not enrolled" in r.stdout and "pixel.tail1234.ts.net" in r.stdout
    assert "enrolled node oldbox not seen by the hub" in r.stdout
    assert "enrolled node oldbox matches no tailnet device" in r.stdout
