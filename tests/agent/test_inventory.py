"""Inventory collector on this machine: real facts, sent at start, re-sent only on change."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid

import pytest

from agent import wire
from agent.collectors.inventory import InventoryCollector, gather, os_release
from agent.config import AGENT_OPTS
from agent.settings import load
from agent.state import State


def settings(**kw):
    return load(AGENT_OPTS, kw, None, env={})


@pytest.fixture
def collector(tmp_path):
    events: list = []
    state = State(tmp_path / "state.db")
    c = InventoryCollector(settings(inventory_interval=10), lambda e: events.append(e) or True, state)
    yield c, events
    state.close()


def test_facts_are_this_machine():
    hostname, f = gather()
    assert hostname == socket.gethostname()
    assert f["kernel"] == os.uname().release and f["arch"] == os.uname().machine
    assert f["cpu"]["count"] == os.cpu_count()
    assert f["memory_bytes"] > 0
    with open("/etc/os-release") as fh:
        assert f["os"]["id"] and f'ID={f["os"]["id"]}' in fh.read()
    assert any(m["mountpoint"] == "/" for m in f["mounts"])
    lo = next(i for i in f["interfaces"] if i["name"] == "lo")
    assert "127.0.0.1/8" in lo["addresses"] and lo["up"]
    assert all(not d["name"].startswith("loop") for d in f["disks"])


def test_os_release_parsing(tmp_path):
    p = tmp_path / "os-release"
    p.write_text('# comment\nNAME="Fedora Linux"\nVERSION_ID=39\nPRETTY_NAME="Fedora \\"Linux\\" 39"\nID=fedora\nHOME_URL=x\n')
    assert os_release(str(p)) == {"name": "Fedora Linux", "version_id": "39", "pretty_name": 'Fedora "Linux" 39', "id": "fedora"}


def test_sent_at_start_then_only_on_change(collector):
    c, events = collector
    assert c.check(force=True) and len(events) == 1
    ev = events[0]
    assert isinstance(ev, wire.Inventory) and ev.hostname == socket.gethostname()
    wire.encode_event(ev)  # the facts must be encodable as they are
    # Nothing changed: nothing sent. (Another process may add an interface meanwhile on a
    # shared machine; then the event must carry a real difference, and we look again.)
    for _ in range(3):
        if not c.check():
            break
        assert events[-1].facts != events[-2].facts or events[-1].hostname != events[-2].hostname
    else:
        raise AssertionError("the inventory changed on every check")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2")
def test_new_interface_and_tailscale_address_is_a_change(collector):
    c, events = collector
    c.check(force=True)
    a, b = f"hli{uuid.uuid4().hex[:8]}", f"hlj{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "100.101.102.103/32", "dev", a], check=True)
        assert c.check() and len(events) == 2
        facts = events[1].facts
        iface = next(i for i in facts["interfaces"] if i["name"] == a)
        assert iface["addresses"] == ["100.101.102.103/32"] and iface["mac"]
        assert facts["tailscale_ip"] == "100.101.102.103"
    finally:
        subprocess.run(["ip", "link", "del", a], check=False)
    assert c.check() and events[2].facts["tailscale_ip"] is None
    assert all(i["name"] != a for i in events[2].facts["interfaces"])


async def test_run_emits_at_start(collector):
    c, events = collector
    task = asyncio.create_task(c.run())
    try:
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.02)
        assert len(events) == 1 and isinstance(events[0], wire.Inventory)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_interval_validated(tmp_path):
    state = State(tmp_path / "s.db")
    with pytest.raises(ValueError, match="inventory_interval"):
        InventoryCollector(settings(inventory_interval=1), lambda e: True, state)
    state.close()
