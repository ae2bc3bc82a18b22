"""Feeding a real in-process hub the events a node would send (docs, export, drift tests),
and the root conftest's helpers under a name no other conftest.py can shadow."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import aiohttp

from agent import wire


def _root_conftest():
    # `from conftest import ...` is ambiguous once a sub-directory has its own conftest.py
    # (pytest imports them all as "conftest"); load tests/conftest.py under its own name.
    name = "homelab_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "conftest.py")
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


_root = _root_conftest()
Proc, async_wait_for, free_port, join_agent, query, wait_for = (
    _root.Proc, _root.async_wait_for, _root.free_port, _root.join_agent, _root.query, _root.wait_for)


class FakeNode:
    """Speaks the real wire protocol to the hub: join with a token, then numbered batches."""

    def __init__(self, hub, name: str):
        self.hub, self.name, self.seq, self.cred = hub, name, 0, ""

    async def join(self) -> FakeNode:
        token = self.hub.enroll(self.name)
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{self.hub.url}/v1/join", json={"token": token}) as r:
                assert r.status == 200, await r.text()
                self.cred = (await r.json())["credential"]
        return self

    async def send(self, *events: wire.Event) -> None:
        rows = []
        for e in events:
            self.seq += 1
            rows.append((self.seq, wire.encode_event(e)))
        body = wire.encode_batch(self.name, time.time(), rows)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.cred}"}) as s:
            async with s.post(f"{self.hub.url}/v1/ingest", data=body) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["ack"] == self.seq


def inventory(hostname: str, ts: float = 1000.0) -> wire.Inventory:
    return wire.Inventory(ts=ts, hostname=hostname, facts={
        "os": {"pretty_name": "Debian GNU/Linux 12 (bookworm)"}, "kernel": "6.1.0-18-amd64",
        "arch": "x86_64", "cpu": {"model": "Intel N100", "count": 4}, "memory_bytes": 16 * 2**30,
        "primary_ip": "192.168.1.20",
        "disks": [{"name": "nvme0n1", "size_bytes": 512 * 10**9, "model": "WD SN570", "rotational": 0}],
        "mounts": [{"mountpoint": "/", "device": "/dev/nvme0n1p2", "fstype": "ext4", "total_bytes": 500 * 10**9}],
        "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "mtu": 1500, "up": 1,
                        "addresses": ["192.168.1.20/24"]}],
    })


def packages(*names_versions: tuple[str, str, bool], ts: float = 1001.0) -> wire.PackageInventory:
    return wire.PackageInventory(ts=ts, manager="dpkg", packages=[
        wire.PackageInfo(name=n, version=v, arch="amd64", manual=m) for n, v, m in names_versions])


def created(path: str, text: str, mode: int = 0o644, ts: float = 1002.0, secret: bool = False) -> wire.FileChange:
    import difflib
    import hashlib

    diff = None if secret else "".join(difflib.unified_diff(
        [], text.splitlines(keepends=True), fromfile="/dev/null", tofile=f"b{path}"))
    return wire.FileChange(ts=ts, action="create", path=path, size=len(text.encode()), mode=mode, uid=0, gid=0,
                           sha256=hashlib.sha256(text.encode()).hexdigest(), content_changed=True,
                           secret=secret, diff=diff)


def modified(path: str, old: str, new: str, ts: float, mode: int = 0o644) -> wire.FileChange:
    import difflib
    import hashlib

    diff = "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=f"a{path}", tofile=f"b{path}"))
    return wire.FileChange(ts=ts, action="modify", path=path, size=len(new.encode()), mode=mode, uid=0, gid=0,
                           sha256=hashlib.sha256(new.encode()).hexdigest(),
                           old_sha256=hashlib.sha256(old.encode()).hexdigest(), content_changed=True, diff=diff)


def service(unit: str, active: str = "active", enabled: str = "enabled", ts: float = 1003.0) -> wire.Service:
    return wire.Service(ts=ts, unit=unit, active=active, sub="running" if active == "active" else "dead",
                        enabled=enabled)
