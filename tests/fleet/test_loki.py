"""Log forwarding to Loki's push API, against a local stand-in that checks the documented
request shape: JSON {"streams": [{"stream": {labels}, "values": [["<ns>", "<line>"]]}]}."""

from __future__ import annotations

import time

import pytest
from aiohttp import web
from fleetlib import async_wait_for, free_port, send

from agent import wire
from hub.app import create_app
from hub.config import load_settings
from hub.keys import STATS


class FakeLoki:
    def __init__(self, fail_first: int = 0):
        self.fail_first = fail_first
        self.requests = 0
        self.lines: list[tuple[dict, int, str]] = []
        self.problems: list[str] = []

    async def push(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.content_type != "application/json":
            self.problems.append(f"content type {request.content_type}")
        body = await request.json()
        for s in body["streams"]:
            labels, values = s["stream"], s["values"]
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
                self.problems.append(f"labels not strings: {labels}")
            for ts, line in values:  # noqa: B007 - both must be strings
                if not (isinstance(ts, str) and ts.isdigit() and len(ts) >= 19 and isinstance(line, str)):
                    self.problems.append(f"timestamp {ts!r} is not nanoseconds as a string")
        if self.requests <= self.fail_first:
            return web.Response(status=503, text="ingester not ready")
        for s in body["streams"]:
            for ts, line in s["values"]:
                self.lines.append((s["stream"], int(ts), line))
        return web.Response(status=204)


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


class Hub:
    def __init__(self, data_dir, port, app):
        self.data_dir, self.url, self.app = data_dir, f"http://127.0.0.1:{port}", app

    def enroll(self, name):
        from fleetlib import enroll

        return enroll(self.data_dir, name)


@pytest.fixture
async def loki_hub(tmp_path, monkeypatch):
    runners = []

    async def make(loki_port: int, queue: int = 10_000) -> Hub:
        s = load_settings(data_dir=tmp_path / "hub", loki_url=f"http://127.0.0.1:{loki_port}", loki_queue=queue)
        app = create_app(s)
        runner, port = await start_app(app)
        runners.append(runner)
        return Hub(tmp_path / "hub", port, app)

    yield make
    for r in runners:
        await r.cleanup()


def logs(n: int, start: int = 1) -> list[tuple[int, wire.Log]]:
    now = time.time()
    return [(i, wire.Log(ts=now + i / 1000, source="journald", message=f"line {i}", program="sshd",
                         unit="ssh.service" if i % 2 else None, severity=6 if i % 3 else 3))
            for i in range(start, start + n)]


async def test_logs_reach_loki_batched_labelled_and_retried(loki_hub):
    from fleetlib import join

    loki = FakeLoki(fail_first=2)
    lapp = web.Application()
    lapp.router.add_post("/loki/api/v1/push", loki.push)
    lrunner, lport = await start_app(lapp)
    try:
        hub = await loki_hub(lport)
        cred = await join(hub, "web1")
        status, _ = await send(hub, cred, "web1", logs(50) + [(51, wire.Metrics(ts=time.time(), samples={"x": 1.0}))])
        assert status == 200
        await async_wait_for(lambda: len(loki.lines) >= 50, 20, what="lines at the stand-in Loki")
        assert loki.problems == []
        assert [line for _l, _t, line in sorted(loki.lines, key=lambda x: x[1])] == [f"line {i}" for i in range(1, 51)]
        assert len(loki.lines) == 50  # exactly once, metrics not forwarded
        by_line = {line: labels for labels, _t, line in loki.lines}
        assert by_line["line 1"] == {"job": "homelab", "node": "web1", "unit": "ssh.service", "program": "sshd", "level": "info"}
        assert by_line["line 3"]["level"] == "error" and "unit" not in by_line["line 2"]
        # per stream, values are in time order (what Loki requires)
        for labels in {tuple(sorted(lab.items())) for lab, _t, _l in loki.lines}:
            ts = [t for lab, t, _l in loki.lines if tuple(sorted(lab.items())) == labels]
            assert ts == sorted(ts)
        assert loki.requests >= 3  # two refusals, then the batch
        assert hub.app[STATS]["loki_failures"] == 2 and hub.app[STATS]["loki_lines"] == 50
    finally:
        await lrunner.cleanup()


async def test_loki_down_sheds_oldest_and_counts(loki_hub):
    from fleetlib import join

    lport = free_port()  # nothing listens here yet
    hub = await loki_hub(lport, queue=10)
    cred = await join(hub, "web2")
    assert (await send(hub, cred, "web2", logs(25)))[0] == 200
    await async_wait_for(lambda: hub.app[STATS]["loki_shed"] == 15, 10, what="15 lines shed")
    await async_wait_for(lambda: hub.app[STATS]["loki_failures"] >= 1, 10, what="a failed push")
    # Loki comes up: the 10 newest lines arrive
    loki = FakeLoki()
    lapp = web.Application()
    lapp.router.add_post("/loki/api/v1/push", loki.push)
    runner = web.AppRunner(lapp)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", lport).start()
    try:
        await async_wait_for(lambda: len(loki.lines) == 10, 40, what="the kept lines after Loki came back")
        assert [line for _l, _t, line in sorted(loki.lines, key=lambda x: x[1])] == [f"line {i}" for i in range(16, 26)]
        # the hub's own database kept everything
        from fleetlib import query

        assert query(hub.data_dir, "SELECT count(*) FROM events WHERE kind = 'log'")[0][0] == 25
    finally:
        await runner.cleanup()


async def test_lines_queued_at_shutdown_are_flushed(tmp_path):
    from fleetlib import join

    loki = FakeLoki()
    lapp = web.Application()
    lapp.router.add_post("/loki/api/v1/push", loki.push)
    lrunner, lport = await start_app(lapp)
    try:
        s = load_settings(data_dir=tmp_path / "hub", loki_url=f"http://127.0.0.1:{lport}")
        app = create_app(s)
        runner, port = await start_app(app)
        hub = Hub(tmp_path / "hub", port, app)
        cred = await join(hub, "web3")
        assert (await send(hub, cred, "web3", logs(7)))[0] == 200
        await runner.cleanup()  # within the forwarder's one-second batching window
        assert sorted(line for _l, _t, line in loki.lines) == sorted(f"line {i}" for i in range(1, 8))
    finally:
        await lrunner.cleanup()
