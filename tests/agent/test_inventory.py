"""Inventory collector on this machine: real facts, sent at start, re-sent only on change."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agent import wire
from agent.collectors.inventory import InventoryCollector, gather, os_release
from agent.config import AGENT_OPTS
from agent.settings import load
from agent.state import State

ROOT = Path(__file__).resolve().parents[2]


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
        subprocess.run(["ip", "addr", "add", "fd00:77::5/64", "dev", a, "nodad"], check=True)
        subprocess.run(["ip", "addr", "add", "10.99.0.7/24", "dev", a], check=True)
        assert c.check() and len(events) == 2
        facts = events[1].facts
        iface = next(i for i in facts["interfaces"] if i["name"] == a)
        # IPv4 first, in numeric order, then IPv6 (the link is down: no link-local address)
        assert iface["addresses"] == ["10.99.0.7/24", "100.101.102.103/32", "fd00:77::5/64"] and iface["mac"]
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


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2")
def test_ipv6_privacy_addresses_are_left_out(tmp_path):
    """A laptop's RFC 8981 temporary addresses change every day; in the inventory they would
    make a change every day. The kernel makes one here from a ``mngtmpaddr`` address."""
    ns = f"hlinv{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def ip(*args):
            return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout

        ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.v0.use_tempaddr=2"], check=True)
        ip("link", "set", "v0", "up")
        ip("link", "set", "v1", "up")
        ip("addr", "add", "2001:db8:7::1/64", "dev", "v0", "mngtmpaddr", "nodad")
        temporary = []
        deadline = time.monotonic() + 30
        while not temporary and time.monotonic() < deadline:
            temporary = [a["local"] for i in json.loads(ip("-j", "addr", "show", "dev", "v0"))
                         for a in i["addr_info"] if a.get("temporary")]
            time.sleep(0.1)
        assert temporary, "the kernel made no temporary address"
        probe = ("import json; from agent import sysinfo; from agent.collectors.inventory import interfaces;"
                 "print(json.dumps([interfaces()[0], sysinfo.addresses()]))")
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe], check=True,
                             capture_output=True, text=True, cwd=ROOT).stdout
        ifaces, every = json.loads(out)
        v0 = next(i for i in ifaces if i["name"] == "v0")
        assert "2001:db8:7::1/64" in v0["addresses"]
        assert v0["addresses"][-1].startswith("fe80::")  # link-local: stable, kept
        assert not any(a.startswith(temporary[0] + "/") for a in v0["addresses"])
        assert ["v0", temporary[0], 64] in every  # sysinfo itself lists it, as getifaddrs does
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
