"""Tailnet identity: a stand-in tailscaled LocalAPI on a Unix socket answers whois; the hub
records the identity at join and refuses a credential used from another tailnet device."""

from __future__ import annotations

import time

import aiohttp
import pytest
from aiohttp import web
from fleetlib import free_port, send

from agent import wire
from hub.app import create_app
from hub.config import load_settings
from hub.tailnet import local as tailnet


class FakeTailscaled:
    """Speaks the LocalAPI's shape: /localapi/v0/status and /localapi/v0/whois?addr=IP:PORT."""

    def __init__(self):
        self.peers: dict[str, dict] = {}  # ip -> whois body
        self.whois_calls = 0
        self.bad_host = 0
        self.fail = False

    def set_peer(self, ip: str, stable_id: str, name: str, user: str = "alice@example.com") -> None:
        self.peers[ip] = {"Node": {"ID": 1234, "StableID": stable_id, "Name": f"{name}.tail1234.ts.net.",
                                   "Addresses": ["100.64.0.7/32"]},
                          "UserProfile": {"ID": 1, "LoginName": user, "DisplayName": "Alice"}, "CapMap": {}}

    async def whois(self, request: web.Request) -> web.Response:
        self.whois_calls += 1
        if self.fail:
            return web.Response(status=500, text="backend not running")
        if request.headers.get("Host") != tailnet.LOCALAPI_HOST:
            self.bad_host += 1
        addr = request.query.get("addr", "")
        ip = addr.rsplit(":", 1)[0].strip("[]")
        if ip not in self.peers:
            return web.Response(status=404, text="no match for IP:port")
        return web.json_response(self.peers[ip])

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response({"BackendState": "Running",
                                  "Self": {"TailscaleIPs": ["100.101.102.103", "fd7a:115c:a1e0::1"]}})


@pytest.fixture
async def tailscaled(tmp_path):
    fake = FakeTailscaled()
    app = web.Application()
    app.router.add_get("/localapi/v0/whois", fake.whois)
    app.router.add_get("/localapi/v0/status", fake.status)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = tmp_path / "tailscaled.sock"
    await web.UnixSite(runner, str(sock)).start()
    fake.path = str(sock)
    yield fake
    await runner.cleanup()


class Hub:
    def __init__(self, data_dir, port, app):
        self.data_dir, self.url, self.app = data_dir, f"http://127.0.0.1:{port}", app

    def enroll(self, name):
        from fleetlib import enroll

        return enroll(self.data_dir, name)

    def query(self, sql, args=()):
        from fleetlib import query

        return query(self.data_dir, sql, args)


@pytest.fixture
async def ts_hub(tmp_path, monkeypatch):
    for k in ("HOMELAB_HUB_TAILSCALE_SOCKET", "HOMELAB_HUB_TAILNET_ENFORCE"):
        monkeypatch.delenv(k, raising=False)
    runners = []

    async def make(sock: str, **flags) -> Hub:
        app = create_app(load_settings(data_dir=tmp_path / "hub", tailscale_socket=sock, **flags))
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return Hub(tmp_path / "hub", port, app)

    yield make
    for r in runners:
        await r.cleanup()


async def join(hub, name):
    token = hub.enroll(name)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{hub.url}/v1/join", json={"token": token}) as r:
            return r.status, await r.json()


def metric(ts=None):
    return wire.Metrics(ts=ts or time.time(), samples={"load1": 0.5})


async def test_identity_recorded_at_join_and_mismatch_refused(tailscaled, ts_hub):
    hub = await ts_hub(tailscaled.path)
    tailscaled.set_peer("127.0.0.1", "nLAPTOP1CNTRL", "laptop")
    status, body = await join(hub, "laptop")
    assert status == 200
    ident = tailnet.Identity.from_text(hub.query("SELECT tailnet_identity FROM nodes WHERE name='laptop'")[0][0])
    assert ident == tailnet.Identity("nLAPTOP1CNTRL", "laptop.tail1234.ts.net", "alice@example.com")
    cred = body["credential"]
    assert (await send(hub, cred, "laptop", [(1, metric())]))[0] == 200
    assert tailscaled.bad_host == 0

    # the same credential, now from another tailnet device (once the whois cache expires)
    tailscaled.set_peer("127.0.0.1", "nOTHERBOX9CNTRL", "otherbox", "mallory@example.com")
    await _expire_whois_cache(hub)
    status, reply = await send(hub, cred, "laptop", [(2, metric())])
    assert status == 403
    assert "does not match" in reply["error"] and "nOTHERBOX9CNTRL" in reply["error"] and "nLAPTOP1CNTRL" in reply["error"]
    assert hub.query("SELECT last_seq FROM nodes WHERE name='laptop'")[0][0] == 1

    # not a tailnet peer at all
    tailscaled.peers.clear()
    await _expire_whois_cache(hub)
    status, reply = await send(hub, cred, "laptop", [(2, metric())])
    assert status == 403 and "not a tailnet peer" in reply["error"]


async def _expire_whois_cache(hub) -> None:
    from hub.tailnet.web import WHOIS

    hub.app[WHOIS].cache.clear()


async def test_node_without_identity_gets_one_on_first_contact(tailscaled, ts_hub, tmp_path):
    # joined while the hub could not ask (no socket), then tailscaled appears
    hub = await ts_hub(str(tmp_path / "absent.sock"))
    status, body = await join(hub, "nas")
    assert status == 200
    assert (await send(hub, body["credential"], "nas", [(1, metric())]))[0] == 200
    assert hub.query("SELECT tailnet_identity FROM nodes WHERE name='nas'")[0][0] is None

    hub2 = await ts_hub(tailscaled.path)
    tailscaled.set_peer("127.0.0.1", "nNAS7CNTRL", "nas")
    assert (await send(hub2, body["credential"], "nas", [(2, metric())]))[0] == 200
    text = hub2.query("SELECT tailnet_identity FROM nodes WHERE name='nas'")[0][0]
    assert tailnet.Identity.from_text(text).id == "nNAS7CNTRL"


async def test_enforce_off_records_but_allows(tailscaled, ts_hub):
    hub = await ts_hub(tailscaled.path, tailnet_enforce=False)
    tailscaled.set_peer("127.0.0.1", "nA", "a")
    status, body = await join(hub, "a")
    tailscaled.set_peer("127.0.0.1", "nB", "b")
    await _expire_whois_cache(hub)
    assert (await send(hub, body["credential"], "a", [(1, metric())]))[0] == 200


async def test_whois_is_cached(tailscaled, ts_hub):
    hub = await ts_hub(tailscaled.path)
    tailscaled.set_peer("127.0.0.1", "nC", "c")
    status, body = await join(hub, "c")
    before = tailscaled.whois_calls
    for i in range(1, 6):
        assert (await send(hub, body["credential"], "c", [(i, metric())]))[0] == 200
    assert tailscaled.whois_calls - before <= 1


async def test_local_address_from_localapi_status(tailscaled, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no tailscale CLI: the LocalAPI answers
    addr = await _in_thread(tailnet.local_address, tailscaled.path)
    assert addr == "100.101.102.103"
    assert await _in_thread(tailnet.local_address, "/nonexistent.sock") is None


async def _in_thread(fn, *args):
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def test_broken_tailscaled_fails_open_counted_and_is_not_asked_per_request(tailscaled, ts_hub):
    from hub.keys import STATS
    from hub.tailnet.web import WHOIS

    hub = await ts_hub(tailscaled.path)
    tailscaled.set_peer("127.0.0.1", "nD", "d")
    status, body = await join(hub, "d")
    assert status == 200

    hub.app[WHOIS].cache.clear()
    tailscaled.fail = True  # every whois now answers 500
    before = tailscaled.whois_calls
    for i in range(1, 4):
        assert (await send(hub, body["credential"], "d", [(i, metric())]))[0] == 200
    assert hub.app[STATS]["tailnet_unchecked"] == 3
    assert tailscaled.whois_calls - before == 1  # asked once, then left alone for a while
