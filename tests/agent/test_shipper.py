"""The shipper's linger: bulk events share a request, anything else goes at once and takes
the lingering ones along; a backlog is never held back. Against a real aiohttp server on
loopback that decodes frames with the real wire module and acks like the hub."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from aiohttp import web

from agent import wire
from agent.shipper import Shipper, urgent
from agent.spool import Spool


class FakeHub:
    def __init__(self):
        self.last = 0
        self.requests: list[tuple[float, list]] = []  # (monotonic arrival, events)

    async def hello(self, request):
        return web.json_response({"node": "n1", "last_seq": self.last, "time": time.time()})

    async def ingest(self, request):
        frame = wire.decode_batch(await request.read())
        self.requests.append((time.monotonic(), frame.events))
        if frame.seqs:
            self.last = frame.seqs[-1]
        return web.json_response({"ack": self.last, "stored": len(frame.seqs), "duplicates": 0})


@pytest.fixture
async def hub():
    h = FakeHub()
    app = web.Application()
    app.router.add_get("/v1/hello", h.hello)
    app.router.add_post("/v1/ingest", h.ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    h.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    yield h
    await runner.cleanup()


@contextlib.asynccontextmanager
async def shipping(hub, tmp_path, linger):
    spool = Spool(tmp_path / "spool.db", 10**8)
    sh = Shipper(spool, hub.url, "n1", "cred", heartbeat=3600, linger=linger)
    stopping = asyncio.Event()

    def put(*events):
        spool.append([wire.encode_event(e) for e in events])
        sh.spooled(urgent(events))

    task = asyncio.create_task(sh.run(stopping))
    try:
        yield sh, put
    finally:
        stopping.set()
        sh.wakeup.set()
        await asyncio.wait_for(task, 10)
        await sh.close()
        spool.close()


def metric(i):
    return wire.Metrics(ts=float(i), samples={"load1": float(i)})


async def wait_requests(hub, n, timeout=30.0):
    deadline = time.monotonic() + timeout
    while sum(1 for _, evs in hub.requests if evs) < n:
        assert time.monotonic() < deadline, f"only {hub.requests} after {timeout}s"
        await asyncio.sleep(0.01)
    return [(t, evs) for t, evs in hub.requests if evs]


def test_urgent_kinds():
    assert not urgent([metric(1), wire.Log(ts=1.0, source="s", message="m"),
                       wire.Command(ts=1.0, command="ls")])
    assert urgent([metric(1), wire.Service(ts=1.0, unit="a.service", active="failed")])
    assert urgent([wire.FileChange(ts=1.0, action="modify", path="/etc/x", content_changed=True)])


async def test_bulk_events_linger_and_share_one_request(hub, tmp_path):
    async with shipping(hub, tmp_path, linger=1.0) as (_sh, put):
        t0 = time.monotonic()
        for i in range(5):
            put(metric(i))
            await asyncio.sleep(0.1)
        reqs = await wait_requests(hub, 1)
        await asyncio.sleep(0.3)  # nothing else may follow on its own
        reqs = [(t, evs) for t, evs in hub.requests if evs]
    assert len(reqs) == 1 and len(reqs[0][1]) == 5
    assert reqs[0][0] - t0 >= 0.95  # held for the linger, counted from the first event


async def test_urgent_event_ships_at_once_with_what_lingers(hub, tmp_path):
    async with shipping(hub, tmp_path, linger=30.0) as (_sh, put):
        put(metric(1), metric(2))
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        put(wire.Service(ts=3.0, unit="nginx.service", active="failed", previous="active"))
        reqs = await wait_requests(hub, 1)
    assert reqs[0][0] - t0 < 5.0  # not the 30 s linger
    assert [e.__struct_config__.tag for e in reqs[0][1]] == ["metrics", "metrics", "service"]


async def test_backlog_is_not_held_back_and_zero_linger_ships_each(hub, tmp_path):
    spool = Spool(tmp_path / "spool.db", 10**8)
    spool.append([wire.encode_event(metric(i)) for i in range(3)])  # left from a previous run
    spool.close()
    async with shipping(hub, tmp_path, linger=60.0):
        reqs = await wait_requests(hub, 1, timeout=5.0)
    assert len(reqs[0][1]) == 3
    hub.requests.clear()
    async with shipping(hub, tmp_path, linger=0.0) as (_sh, put):
        put(metric(10))
        await wait_requests(hub, 1, timeout=5.0)
        put(metric(11))
        reqs = await wait_requests(hub, 2, timeout=5.0)
    assert [len(evs) for _, evs in reqs] == [1, 1]
