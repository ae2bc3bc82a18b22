"""The twin tables through the real ingest path, and the `twin` / `changes` commands."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid

import aiohttp
import pytest
from click.testing import CliRunner

from agent import wire
from hub.cli import cli
from hub.twin.cli import COMMANDS, parse_since
from tests.conftest import join_agent, wait_for

for _c in COMMANDS:
    cli.add_command(_c)

T0 = time.time() - 3600


@pytest.fixture(autouse=True)
def no_proposals(tmp_path, monkeypatch):
    """These tests send failed units and pending security updates, which shipped rules turn
    into alerts and the proposals feature into model runs. The twin needs neither: no model,
    and no proposal worker in the in-process hub (on Python 3.11 its
    wait_for(wake.wait(), TICK) can swallow the shutdown's cancellation when a wake-up
    lands at the same moment, and the hub's teardown then never ends)."""
    from hub.proposals import web as proposals
    monkeypatch.setattr(proposals, "setup", lambda app: None)
    (tmp_path / "hub").mkdir(exist_ok=True)
    (tmp_path / "hub" / "hub.toml").write_text('model = "none"\n')


async def join(hub, name="n1"):
    token = hub.enroll(name)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{hub.url}/v1/join", json={"token": token}) as r:
            assert r.status == 200, await r.text()
            return (await r.json())["credential"]


class Sender:
    """Posts events for one node with increasing sequence numbers."""

    def __init__(self, hub, cred, node="n1"):
        self.hub, self.cred, self.node, self.seq = hub, cred, node, 0

    async def send(self, *events):
        pairs = []
        for e in events:
            self.seq += 1
            pairs.append((self.seq, wire.encode_event(e)))
        body = wire.encode_batch(self.node, time.time(), pairs)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.cred}"}) as s:
            async with s.post(f"{self.hub.url}/v1/ingest", data=io.BytesIO(body)) as r:
                assert r.status == 200, await r.text()
                return await r.json()


def inv(ts, hostname="box", mounts=("/", "/boot"), addr="10.0.0.5/24", **extra):
    facts = {
        "os": {"pretty_name": "Debian GNU/Linux 12 (bookworm)", "id": "debian"},
        "kernel": "6.1.0-test", "arch": "x86_64",
        "cpu": {"model": "Test CPU", "count": 2}, "memory_bytes": 4 << 30, "swap_bytes": 0,
        "boot_time": T0 - 100, "primary_ip": addr.split("/")[0], "tailscale_ip": "100.64.1.2",
        "mounts": [{"mountpoint": m, "device": "/dev/vda1", "fstype": "ext4", "options": "rw", "total_bytes": 10 << 30} for m in mounts],
        "disks": [{"name": "vda", "size_bytes": 20 << 30, "model": "QEMU", "rotational": 0, "removable": 0}],
        "interfaces": [{"name": "eth0", "mac": "52:54:00:00:00:01", "mtu": 1500, "up": True, "addresses": [addr]},
                       {"name": "tailscale0", "mtu": 1280, "up": True, "addresses": ["100.64.1.2/32"]}],
        **extra,
    }
    return wire.Inventory(ts=ts, hostname=hostname, facts=facts)


def pkginv(ts, *pkgs):
    return wire.PackageInventory(ts=ts, manager="dpkg", packages=[wire.PackageInfo(*p) for p in pkgs])


async def test_inventory_replaces_sets(hub):
    s = Sender(hub, await join(hub))
    await s.send(inv(T0))
    row = hub.query("SELECT hostname, os, kernel, cpu_count, memory_bytes, tailscale_ip FROM inventory WHERE node='n1'")
    assert row == [("box", "Debian GNU/Linux 12 (bookworm)", "6.1.0-test", 2, 4 << 30, "100.64.1.2")]
    assert hub.query("SELECT mountpoint FROM mounts ORDER BY 1") == [("/",), ("/boot",)]
    # two snapshots in one batch: the newer one wins, /boot is gone, /data is new
    await s.send(inv(T0 + 1, mounts=("/", "/srv")), inv(T0 + 2, hostname="box2", mounts=("/", "/data"), addr="10.0.0.9/24"))
    assert hub.query("SELECT mountpoint FROM mounts ORDER BY 1") == [("/",), ("/data",)]
    assert hub.query("SELECT hostname, primary_ip FROM inventory") == [("box2", "10.0.0.9")]
    assert hub.query("SELECT addresses FROM interfaces WHERE name='eth0'") == [("10.0.0.9/24",)]


async def test_hostile_facts_become_null_not_errors(hub):
    s = Sender(hub, await join(hub))
    bad = wire.Inventory(ts=T0, hostname="weird", facts={
        "cpu": "not a dict", "memory_bytes": "lots", "mounts": [1, "x", {"mountpoint": 5}, {"mountpoint": "/ok", "total_bytes": 2**63 + 5}],
        "interfaces": {"eth0": 1}, "os": ["list"], "boot_time": True})
    await s.send(bad)
    assert hub.query("SELECT hostname, cpu_model, memory_bytes, os FROM inventory") == [("weird", None, None, None)]
    assert hub.query("SELECT mountpoint, total_bytes FROM mounts") == [("5", None), ("/ok", None)]


async def test_packages_history_and_state(hub):
    s = Sender(hub, await join(hub))
    await s.send(pkginv(T0, ("bash", "5.2", "amd64", True), ("libc6", "2.36", "amd64", False), ("vim", "9.0", "amd64", True)))
    assert hub.query("SELECT count(*) FROM packages WHERE state='installed'") == [(3,)]
    await s.send(
        wire.Package(ts=T0 + 10, action="install", manager="dpkg", name="htop", version="3.2", arch="amd64",
                     user="alice", command="apt-get install htop"),
        wire.Package(ts=T0 + 20, action="upgrade", manager="dpkg", name="bash", version="5.3", old_version="5.2", arch="amd64"),
        wire.Package(ts=T0 + 30, action="remove", manager="dpkg", name="vim", old_version="9.0", arch="amd64"),
    )
    state = dict((r[0], r[1:]) for r in hub.query("SELECT name, version, state, manual FROM packages"))
    assert state["htop"] == ("3.2", "installed", None)
    assert state["bash"] == ("5.3", "installed", 1)  # manual flag survives an upgrade
    assert state["vim"] == ("9.0", "removed", 1)
    # a later snapshot without libc6: marked removed; htop gets its manual flag
    await s.send(pkginv(T0 + 40, ("bash", "5.3", "amd64", True), ("htop", "3.2", "amd64", False)))
    state = dict((r[0], r[1:]) for r in hub.query("SELECT name, version, state, manual FROM packages"))
    assert state["libc6"][1] == "removed" and state["htop"] == ("3.2", "installed", 0)
    assert state["vim"][1] == "removed"
    assert hub.query("SELECT action, name, user, command FROM package_changes ORDER BY ts") == [
        ("install", "htop", "alice", "apt-get install htop"), ("upgrade", "bash", None, None), ("remove", "vim", None, None)]


async def test_pending_services_devices_processes(hub):
    s = Sender(hub, await join(hub))
    up = [wire.PendingUpdate("openssl", "3.0.1", "3.0.2", True), wire.PendingUpdate("curl", "7.1", "7.2", False)]
    await s.send(wire.PendingUpdates(ts=T0, manager="apt", updates=up))
    await s.send(wire.PendingUpdates(ts=T0 + 1, manager="apt", updates=up[:1]))
    assert hub.query("SELECT name, security FROM pending_updates") == [("openssl", 1)]
    await s.send(
        wire.Service(ts=T0, unit="nginx.service", active="active", sub="running", restarts=0),
        wire.Service(ts=T0 + 5, unit="nginx.service", active="failed", sub="failed", result="exit-code", restarts=3, previous="active"),
        wire.Device(ts=T0, action="present", subsystem="block", sys_path="/devices/virtual/block/loop0", dev_node="/dev/loop0"),
        wire.Device(ts=T0 + 6, action="add", subsystem="net", sys_path="/devices/virtual/net/vx0", driver="veth"),
        wire.Device(ts=T0 + 7, action="remove", subsystem="net", sys_path="/devices/virtual/net/vx0"),
        wire.Processes(ts=T0, top=[wire.Proc(1, "init", "root", 0.5, 1000), wire.Proc(2, "old", "root", 0.1, 10)]),
        wire.Processes(ts=T0 + 60, top=[wire.Proc(7, "python", "root", 50.0, 5 << 20, "python x.py"), wire.Proc(1, "init", "root", 0.0, 1000)]),
    )
    assert hub.query("SELECT active, result, restarts FROM services") == [("failed", "exit-code", 3)]
    assert hub.query("SELECT unit FROM failed_units") == [("nginx.service",)]
    assert hub.query("SELECT active, previous FROM service_changes") == [("failed", "active")]
    assert hub.query("SELECT sys_path, present, driver FROM devices ORDER BY 1") == [
        ("/devices/virtual/block/loop0", 1, None), ("/devices/virtual/net/vx0", 0, "veth")]
    assert hub.query("SELECT action FROM device_changes ORDER BY ts") == [("add",), ("remove",)]
    # a renamed interface: the old path is no longer present, the timeline says where it came from
    await s.send(
        wire.Device(ts=T0 + 8, action="add", subsystem="net", sys_path="/devices/virtual/net/vy0"),
        wire.Device(ts=T0 + 9, action="move", subsystem="net", sys_path="/devices/virtual/net/lan0",
                    old_sys_path="/devices/virtual/net/vy0"),
    )
    assert hub.query("SELECT sys_path, present FROM devices WHERE sys_path LIKE '%/v_0' OR sys_path LIKE '%/lan0' ORDER BY 1") == [
        ("/devices/virtual/net/lan0", 1), ("/devices/virtual/net/vx0", 0), ("/devices/virtual/net/vy0", 0)]
    assert hub.query("SELECT detail FROM changes WHERE kind = 'device' AND action = 'move'") == [
        ("net from /devices/virtual/net/vy0",)]
    assert hub.query("SELECT rank, pid, name FROM processes ORDER BY rank") == [(1, 7, "python"), (2, 1, "init")]
    assert hub.query("SELECT node, hostname, pending_updates, security_updates, failed_units, devices FROM twin_summary") == [
        ("n1", None, 1, 1, 1, 2)]


async def test_cli_twin_and_changes(hub):
    s = Sender(hub, await join(hub))
    now = time.time()
    await s.send(
        inv(now - 100),
        pkginv(now - 100, ("bash", "5.2", "amd64", True)),
        wire.Package(ts=now - 7200, action="install", manager="dpkg", name="ancient", version="1"),
        wire.Package(ts=now - 50, action="install", manager="dpkg", name="htop", version="3.2", arch="amd64"),
        wire.FileChange(ts=now - 40, action="modify", path="/etc/hosts", sha256="ab" * 32, content_changed=True),
        wire.Service(ts=now - 30, unit="cron.service", active="failed", previous="active", result="signal"),
        wire.Device(ts=now - 20, action="add", subsystem="block", sys_path="/devices/virtual/block/loop3", dev_node="/dev/loop3"),
        wire.PendingUpdates(ts=now - 10, manager="apt", updates=[
            wire.PendingUpdate(f"p{i:02}", "1", "2", i % 3 == 0) for i in range(60)]),
    )
    runner = CliRunner()
    dd = ["--data-dir", str(hub.data_dir)]
    r = runner.invoke(cli, ["twin", "n1", *dd, "--json"])
    assert r.exit_code == 0, r.output
    state = json.loads(r.output)
    assert state["inventory"]["hostname"] == "box" and state["inventory"]["facts"]["kernel"] == "6.1.0-test"
    assert {p["name"] for p in state["packages"]["list"]} == {"bash", "ancient", "htop"}
    assert state["services"][0]["unit"] == "cron.service"
    assert [p["name"] for p in state["packages"]["recent"]] == ["htop", "ancient"]  # changes, not sightings
    assert state["pending_counts"] == {"total": 60, "security": 20} and len(state["pending_updates"]) == 60
    r = runner.invoke(cli, ["twin", "n1", *dd], env={"COLUMNS": "160"})
    assert r.exit_code == 0 and "Debian GNU/Linux 12" in r.output and "cron.service" in r.output, r.output
    assert "Pending updates: 60 (20 security, 50 shown)" in r.output

    r = runner.invoke(cli, ["changes", "n1", *dd, "--since", "1h", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [(x["kind"], x["action"], x["subject"]) for x in rows] == [
        ("package", "install", "htop:amd64"), ("file", "modify", "/etc/hosts"),
        ("service", "failed", "cron.service"), ("device", "add", "/devices/virtual/block/loop3")]
    assert rows[2]["detail"] == "active -> failed (signal)"
    r = runner.invoke(cli, ["changes", "n1", *dd, "--since", "3h", "--kind", "package", "--json"])
    assert [json.loads(line)["subject"] for line in r.output.splitlines()] == ["ancient", "htop:amd64"]
    r = runner.invoke(cli, ["changes", "n1", *dd, "--since", "1h"])
    assert r.exit_code == 0 and "htop:amd64" in r.output and "ancient" not in r.output, r.output

    r = runner.invoke(cli, ["changes", "nope", *dd])
    assert r.exit_code == 1 and "no node 'nope'" in r.output and "n1" in r.output
    r = runner.invoke(cli, ["changes", "n", *dd])
    assert r.exit_code == 1 and "no node 'n'; did you mean n1?" in r.output
    r = runner.invoke(cli, ["changes", *dd, "--since", "3h", "--json"])  # every node
    assert {json.loads(line)["node"] for line in r.output.splitlines()} == {"n1"}
    r = runner.invoke(cli, ["changes", "n1", *dd, "--since", "yesterday-ish"])
    assert r.exit_code == 1 and "--since" in r.output and "yesterday-ish" in r.output


def test_parse_since():
    assert parse_since("1d", now=100_000.0) == 100_000.0 - 86400
    assert parse_since("2026-01-02") == parse_since("2026-01-02T00:00:00+00:00")
    assert parse_since("2026-01-02T01:00:00+01:00") == parse_since("2026-01-02")


def test_end_to_end_real_agent_to_twin_cli(tmp_path, hub_process, agent_process):
    """A real agent with the twin collectors ships to a real hub; the CLI shows the node."""
    h = hub_process().start()
    state = tmp_path / "agent"
    join_agent(h.url, h.enroll("n1"), state)
    agent = agent_process(state, "--collectors", "inventory,processes,services,devices,packages",
                          env={"HOMELAB_AGENT_PROCESSES_INTERVAL": "1", "HOMELAB_AGENT_PENDING_UPDATES_INTERVAL": "0"})
    wait_for(lambda: h.query("SELECT 1 FROM inventory WHERE node = 'n1'"), 30, what="inventory in the twin")
    wait_for(lambda: h.query("SELECT 1 FROM processes WHERE node = 'n1'"), 30, what="top processes in the twin")
    if shutil.which("dpkg-query"):
        wait_for(lambda: h.query("SELECT 1 FROM packages WHERE node = 'n1' AND name = 'dpkg'"), 30, what="packages")
    # services steps aside here (no systemd): said once, as a notice
    wait_for(lambda: h.query("SELECT 1 FROM events WHERE kind = 'notice' AND data LIKE '%services%'"), 30, what="services notice")
    if shutil.which("ip") and os.geteuid() == 0:
        wait_for(lambda: h.query("SELECT 1 FROM devices WHERE node = 'n1' AND sys_path = '/devices/virtual/net/lo'"), 30, what="device baseline")
        a, b = f"hlf{uuid.uuid4().hex[:8]}", f"hlg{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
        subprocess.run(["ip", "link", "del", a], check=True)
        wait_for(lambda: h.query("SELECT action FROM device_changes WHERE sys_path LIKE ? ORDER BY seq", (f"%/{a}",)) == [("add",), ("remove",)],
                 30, what="veth add/remove in device_changes")
    assert agent.alive()

    def hub_cli(*args):
        return subprocess.run([sys.executable, "-m", "hub", *args, "--data-dir", str(h.data_dir)],
                              capture_output=True, text=True, timeout=60)

    r = hub_cli("twin", "n1", "--json")
    assert r.returncode == 0, r.stderr
    state_ = json.loads(r.stdout)
    assert state_["inventory"]["hostname"] == socket.gethostname()
    assert state_["processes"] and state_["interfaces"]
    r = hub_cli("twin", "n1")
    assert r.returncode == 0 and "Interfaces" in r.stdout, r.stderr
    r = hub_cli("changes", "n1", "--since", "1h", "--json")
    assert r.returncode == 0, r.stderr
    if shutil.which("ip") and os.geteuid() == 0:
        assert any(json.loads(line)["subject"].endswith(f"/{a}") for line in r.stdout.splitlines())


async def test_history_retention(hub):
    from hub.rollup import expire_history as expire

    s = Sender(hub, await join(hub))
    old, new = time.time() - 200 * 86400, time.time() - 60
    await s.send(
        wire.Package(ts=old, action="install", manager="dpkg", name="ancient", version="1"),
        wire.Package(ts=new, action="install", manager="dpkg", name="fresh", version="1"),
        wire.Service(ts=old, unit="a.service", active="failed", previous="active"),
        wire.Device(ts=old, action="add", subsystem="usb", sys_path="/devices/x"),
    )
    more = await hub.writer.run(lambda db: expire(db, time.time() - 90 * 86400))
    assert more is False
    assert hub.query("SELECT name FROM package_changes") == [("fresh",)]
    assert hub.query("SELECT count(*) FROM service_changes") == [(0,)]
    assert hub.query("SELECT count(*) FROM device_changes") == [(0,)]
    # current state is not history: the old package is still known as installed
    assert hub.query("SELECT state FROM packages WHERE name = 'ancient'") == [("installed",)]
