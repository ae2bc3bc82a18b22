"""Devices collector on real kernel uevents: a veth pair and a loop device."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid

import pytest

from agent import wire
from agent.collectors.devices import DevicesCollector
from agent.config import AGENT_OPTS
from agent.settings import load
from agent.state import State

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2 for real uevents")


def settings(**kw):
    return load(AGENT_OPTS, kw, None, env={})


async def wait_until(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Running:
    def __init__(self, tmp_path, state=None, **kw):
        self.events: list[wire.Device] = []
        self.own_state = state is None
        self.state = state or State(tmp_path / "state.db")
        self.c = DevicesCollector(settings(**kw), lambda e: self.events.append(e) or True, self.state)

    async def __aenter__(self):
        self.task = asyncio.create_task(self.c.run())
        await wait_until(lambda: self.c.monitor is not None and self.c.present, what="collector start")
        return self

    async def __aexit__(self, *exc):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        if self.own_state:
            self.state.close()

    def find(self, action, suffix):
        return [e for e in self.events if e.action == action and e.sys_path.endswith(suffix)]


@pytest.fixture
def veth_names():
    made = []

    def names():
        a, b = f"hld{uuid.uuid4().hex[:8]}", f"hle{uuid.uuid4().hex[:8]}"
        made.append(a)
        return a, b

    yield names
    for a in made:
        subprocess.run(["ip", "link", "del", a], capture_output=True, check=False)


async def test_veth_add_remove_and_baseline(tmp_path, veth_names):
    async with Running(tmp_path) as r:
        source = "udev" if os.path.exists("/run/udev/control") else "kernel"
        baseline = [e for e in r.events if e.action == "present"]
        assert any(e.sys_path == "/devices/virtual/net/lo" for e in baseline)
        assert all(e.subsystem in r.c.subsystems for e in baseline)
        r.events.clear()
        a, b = veth_names()
        subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
        await wait_until(lambda: r.find("add", f"/net/{a}") and r.find("add", f"/net/{b}"), what="veth add")
        ev = r.find("add", f"/net/{a}")[0]
        assert (ev.subsystem, ev.source) == ("net", source)
        assert not any(e.subsystem == "queues" for e in r.events)  # not in device_subsystems
        subprocess.run(["ip", "link", "del", a], check=True)
        await wait_until(lambda: r.find("remove", f"/net/{a}") and r.find("remove", f"/net/{b}"), what="veth remove")
        assert f"/devices/virtual/net/{a}" not in r.c.present
        for e in r.events:
            wire.encode_event(e)


async def test_changes_while_stopped_are_reported_at_start(tmp_path, veth_names):
    state = State(tmp_path / "state.db")
    try:
        async with Running(tmp_path, state) as r:
            assert r.events and all(e.action == "present" for e in r.events)
        a, b = veth_names()
        subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
        async with Running(tmp_path, state) as r:
            assert {e.action for e in r.events} <= {"add", "remove"}  # no baseline the second time
            assert r.find("add", f"/net/{a}") and r.find("add", f"/net/{b}")
        subprocess.run(["ip", "link", "del", a], check=True)
        async with Running(tmp_path, state) as r:
            assert r.find("remove", f"/net/{a}") and r.find("remove", f"/net/{b}")
    finally:
        state.close()


@pytest.mark.skipif(not shutil.which("losetup") or not os.path.exists("/dev/loop-control"), reason="no loop devices")
async def test_loop_device(tmp_path):
    img = tmp_path / "disk.img"
    img.write_bytes(b"\0" * (1024 * 1024))
    async with Running(tmp_path) as r:
        r.events.clear()
        out = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"losetup failed here: {out.stderr.strip()}")
        dev = out.stdout.strip()
        name = os.path.basename(dev)
        try:
            await wait_until(lambda: [e for e in r.events if e.sys_path.endswith(f"/block/{name}")], what=f"{dev} uevent")
        finally:
            subprocess.run(["losetup", "-d", dev], check=False)
        ev = next(e for e in r.events if e.sys_path.endswith(f"/block/{name}"))
        assert ev.subsystem == "block" and ev.dev_node == dev and ev.action in ("add", "change")
        assert ev.devtype == "disk"


async def test_star_reports_every_subsystem(tmp_path, veth_names):
    async with Running(tmp_path, device_subsystems=["*"]) as r:
        r.events.clear()
        a, b = veth_names()
        subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
        await wait_until(lambda: any(e.subsystem == "queues" and f"/net/{a}/" in e.sys_path for e in r.events),
                         what="queue uevents")


def test_empty_subsystems_refused(tmp_path):
    state = State(tmp_path / "s.db")
    with pytest.raises(ValueError, match="device_subsystems"):
        DevicesCollector(settings(device_subsystems=[]), lambda e: True, state)
    state.close()


async def test_rename_is_a_move_from_the_old_path(tmp_path, veth_names):
    async with Running(tmp_path) as r:
        a, b = veth_names()
        c = f"hlm{a[3:]}"
        subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
        try:
            subprocess.run(["ip", "link", "set", a, "name", c], check=True)
            await wait_until(lambda: r.find("move", f"/net/{c}"), what="move event")
        finally:
            subprocess.run(["ip", "link", "del", c], capture_output=True, check=False)
        ev = r.find("move", f"/net/{c}")[0]
        assert ev.old_sys_path == f"/devices/virtual/net/{a}"
        assert f"/devices/virtual/net/{a}" not in r.c.present
