"""A small, realistic fleet in a hub database, built through the real ingest path (Writer +
projections), for the brain's benchmark and tests: five nodes with inventories, metrics,
services, packages, commands, logs, devices, file changes, alerts and metric history.

Incident scenarios (bench/data/brain/incidents.yaml) are loaded into their own nodes with
``load_incident``: each incident's events and facts under a node named after it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from agent import wire
from hub.ingest import _json_of
from hub.store import Writer

H, D = 3600, 86400


def ingest(writer: Writer, node: str, events: list[wire.Event]) -> None:
    """Send events for node through the writer exactly as the HTTP handler would."""
    def ensure(db):
        db.execute("INSERT OR IGNORE INTO nodes (name, created) VALUES (?, ?)", (node, time.time()))

    writer.run_sync(ensure)
    start = writer.last_seq.get(node, 0)
    pairs = [(start + i + 1, wire.encode_event(e)) for i, e in enumerate(events)]
    frame = wire.decode_batch(wire.encode_batch(node, time.time(), pairs))
    asyncio.run(writer.ingest(node, frame, _json_of(frame), None))


def inventory(ts, host, os_name, kernel, cpu, cores, mem_gib, mounts, addr, boot_ago) -> wire.Inventory:
    return wire.Inventory(ts=ts, hostname=host, facts={
        "os": {"pretty_name": os_name}, "kernel": kernel, "arch": "x86_64",
        "cpu": {"model": cpu, "count": cores}, "memory_bytes": mem_gib << 30, "swap_bytes": 1 << 30,
        "boot_time": ts - boot_ago, "primary_ip": addr.split("/")[0],
        "mounts": [{"mountpoint": m, "device": "/dev/sda1", "fstype": "ext4", "options": "rw",
                    "total_bytes": size << 30, "used_bytes": int(used * (size << 30))} for m, size, used in mounts],
        "interfaces": [{"name": "eth0", "mac": "52:54:00:00:00:01", "mtu": 1500, "up": True, "addresses": [addr]}],
        "disks": [],
    })


def metrics(ts, disks: dict[str, float], mem, load, cpu, temp=None, rx=0.0) -> wire.Metrics:
    s = {f'disk_used_ratio{{mount="{m}"}}': v for m, v in disks.items()}
    s.update(memory_used_ratio=mem, load1=load, cpu_percent=cpu)
    if temp is not None:
        s['temperature_celsius{chip="coretemp",sensor="Package id 0"}'] = temp
    s['net_receive_bytes_per_second{iface="eth0"}'] = rx
    return wire.Metrics(ts=ts, samples=s)


def pkgs(ts, *items: tuple[str, str]) -> wire.PackageInventory:
    return wire.PackageInventory(ts=ts, manager="dpkg", packages=[wire.PackageInfo(n, v, "amd64", True) for n, v in items])


def cmd(ts, user, command, cwd="/root", exit_code=0) -> wire.Command:
    return wire.Command(ts=ts, command=command, user=user, cwd=cwd, exit_code=exit_code, shell="bash")


def logl(ts, program, message, severity=6) -> wire.Log:
    return wire.Log(ts=ts, source="journald", program=program, message=message, severity=severity)


def fleet_events(now: float) -> dict[str, list[wire.Event]]:
    t = now
    return {
        "nas": [
            inventory(t - 3 * D, "nas", "Debian GNU/Linux 12 (bookworm)", "6.1.0-13-amd64", "Intel N100", 4, 16,
                      [("/", 64, 0.41), ("/srv", 4000, 0.93)], "10.0.0.10/24", 40 * D),
            pkgs(t - 3 * D, ("openssl", "3.0.11-1"), ("docker.io", "20.10.24"), ("samba", "4.17.12"),
                 ("linux-image-6.1.0-11-amd64", "6.1.38-4"), ("linux-image-6.1.0-12-amd64", "6.1.52-1"),
                 ("linux-image-6.1.0-13-amd64", "6.1.55-1")),
            wire.Package(ts=t - 10 * D, action="install", manager="dpkg", name="docker.io", version="20.10.24"),
            wire.Device(ts=t - 8 * D, action="add", subsystem="block", sys_path="/devices/pci0/ata3/block/sdc",
                        devtype="disk", dev_node="/dev/sdc", vendor="WDC", model="WD40EFRX", serial="WD-1234"),
            wire.FileChange(ts=t - 2 * D, action="modify", path="/etc/samba/smb.conf", size=2200, content_changed=True),
            cmd(t - 1 * D, "root", "rm -rf /srv/old-backups"),
            cmd(t - 1 * D + 60, "root", "du -sh /srv/media"),
            logl(t - 5 * H, "sshd", "Accepted publickey for alice from 10.0.0.7 port 51220 ssh2"),
            wire.Service(ts=t - 4 * H, unit="smbd.service", active="failed", previous="active", result="exit-code",
                         restarts=0),
            wire.PendingUpdates(ts=t - 2 * H, manager="apt", updates=[
                wire.PendingUpdate("openssl", "3.0.11-1", "3.0.13-1", True), wire.PendingUpdate("tzdata", "2024a", "2024b")]),
            wire.Processes(ts=t - 60, top=[wire.Proc(812, "smbd", "root", 2.0, 80 << 20), wire.Proc(990, "dockerd", "root", 1.0, 120 << 20)]),
            metrics(t - 60, {"/": 0.41, "/srv": 0.93}, 0.35, 0.4, 5.0, 48.0, 1.2e6),
        ],
        "web1": [
            inventory(t - 3 * D, "web1", "Debian GNU/Linux 12 (bookworm)", "6.1.0-13-amd64", "AMD EPYC", 2, 4,
                      [("/", 40, 0.72)], "10.0.0.20/24", 3 * D),
            pkgs(t - 3 * D, ("openssl", "3.0.11-1"), ("nginx", "1.22.1-9"), ("certbot", "2.1.0")),
            wire.Package(ts=t - 3 * D + 10, action="upgrade", manager="dpkg", name="openssl", version="3.0.11-1",
                         old_version="3.0.9-1"),
            wire.Service(ts=t - 6 * H, unit="nginx.service", active="active", previous="inactive", result="success",
                         restarts=1),
            logl(t - 1 * D, "sshd", "Accepted password for bob from 10.0.0.9 port 40022 ssh2"),
            cmd(t - 3 * H, "bob", "sudo vim /etc/nginx/nginx.conf", "/home/bob"),
            wire.FileChange(ts=t - 3 * H + 30, action="modify", path="/etc/nginx/nginx.conf", size=3100, content_changed=True),
            cmd(t - 2 * H, "bob", "sudo systemctl restart nginx", "/home/bob", exit_code=1),
            logl(t - 2 * H, "nginx", "bind() to 0.0.0.0:80 failed (98: Address already in use)", 3),
            wire.Service(ts=t - 2 * H + 5, unit="nginx.service", active="failed", previous="active", result="exit-code",
                         restarts=2),
            wire.Processes(ts=t - 60, top=[wire.Proc(1200, "python3", "www-data", 65.0, 300 << 20)]),
            metrics(t - 60, {"/": 0.72}, 0.62, 3.2, 71.0, 61.0, 9.5e6),
        ],
        "pi": [
            inventory(t - 3 * D, "pi", "Raspbian GNU/Linux 11 (bullseye)", "6.1.21-v8+", "Cortex-A72", 4, 2,
                      [("/", 32, 0.88)], "10.0.0.30/24", 90 * D),
            pkgs(t - 3 * D, ("openssl", "3.0.9-1"), ("python3", "3.9.2"), ("mosquitto", "2.0.11")),
            wire.Package(ts=t - 1 * D, action="remove", manager="dpkg", name="apache2", old_version="2.4.56"),
            logl(t - 7 * H, "kernel", "python3[4242]: segfault at 0 ip 00007f error 4 in libc.so.6", 3),
            wire.PendingUpdates(ts=t - 2 * H, manager="apt", updates=[
                wire.PendingUpdate(f"pkg{i}", "1.0", "1.1", i < 3) for i in range(25)]),
            wire.Processes(ts=t - 60, top=[wire.Proc(4242, "python3", "pi", 20.0, 900 << 20)]),
            metrics(t - 60, {"/": 0.88}, 0.91, 1.1, 22.0, 71.5, 2.0e5),
        ],
        "laptop": [
            inventory(t - 3 * D, "laptop", "Ubuntu 24.04 LTS", "6.8.0-31-generic", "Intel i7-1165G7", 8, 32,
                      [("/", 512, 0.55)], "10.0.0.40/24", 1 * D),
            pkgs(t - 3 * D, ("openssl", "3.0.13-0ubuntu3"), ("htop", "3.3.0"), ("code", "1.89.0")),
            cmd(t - 2 * D, "alice", "sudo apt install htop", "/home/alice"),
            wire.Package(ts=t - 2 * D + 20, action="install", manager="dpkg", name="htop", version="3.3.0"),
            cmd(t - 2 * D + 100, "alice", "ls -la /home/alice/Downloads", "/home/alice"),
            wire.Device(ts=t - 1 * D, action="add", subsystem="usb", sys_path="/devices/pci0/usb2/2-1",
                        devtype="usb_device", vendor="SanDisk", model="Ultra", serial="4C53"),
            wire.FileChange(ts=t - 20 * H, action="modify", path="/etc/hosts", size=420, content_changed=True),
            metrics(t - 3 * H, {"/": 0.55}, 0.48, 0.2, 3.0, 45.0, 1.0e4),
        ],
        "db1": [
            inventory(t - 3 * D, "db1", "Debian GNU/Linux 12 (bookworm)", "6.1.0-12-amd64", "Intel Xeon E-2236", 6, 64,
                      [("/", 100, 0.66), ("/var/lib/postgresql", 1000, 0.81)], "10.0.0.50/24", 200 * D),
            pkgs(t - 3 * D, ("openssl", "3.0.11-1"), ("postgresql-15", "15.6-0"), ("python3-pip", "23.0.1")),
            cmd(t - 5 * D, "carol", "pip install requests", "/home/carol"),
            wire.Service(ts=t - 6 * H + 1, unit="postgresql.service", active="active", previous="activating", result="success"),
            logl(t - 6 * H, "postgres", "FATAL: out of memory: failed on request of size 1048576", 2),
            wire.Processes(ts=t - 60, top=[wire.Proc(3100, "postgres", "postgres", 80.0, 8 << 30)]),
            metrics(t - 60, {"/": 0.66, "/var/lib/postgresql": 0.81}, 0.77, 5.7, 88.0, 66.0, 4.0e6),
        ],
    }


ALERTS = [  # (node, rule, severity, state, summary, first_seen ago, resolved ago)
    ("web1", "unit_failed", "warning", "firing", "nginx.service failed", 2 * H, None),
    ("db1", "load_high", "warning", "firing", "load1 5.7 on db1", 30 * 60, None),
    ("pi", "memory_high", "critical", "resolved", "memory 95% on pi", 3 * D, 2 * D),
    ("nas", "disk_full", "warning", "resolved", "/srv 95% full", 10 * D, 9 * D),
    ("nas", "unit_failed", "warning", "pending", "smbd.service failed", 4 * H, None),
]


def build_fleet(path: Path | str, now: float | None = None) -> float:
    """Create the fleet database at path; returns the 'now' it was built for."""
    now = time.time() if now is None else now
    writer = Writer(path)
    writer.start()
    try:
        for node, events in fleet_events(now).items():
            ingest(writer, node, events)

        def extras(db):
            db.execute("UPDATE nodes SET last_seen = ? WHERE name = 'laptop'", (now - 3 * H,))
            for node, rule, sev, state, summary, ago, res in ALERTS:
                db.execute(
                    "INSERT INTO alerts (rule, key, node, state, severity, summary, first_seen, last_seen, firing_at,"
                    " resolved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rule, json.dumps([node]), node, state, sev, summary, now - ago, now - (res or 0),
                     None if state == "pending" else now - ago + 60, None if res is None else now - res))
            # a week of hourly disk history: /srv on nas filling up, / on web1 flat
            for node, key, start, end in (("nas", 'disk_used_ratio{mount="/srv"}', 0.80, 0.93),
                                          ("web1", 'disk_used_ratio{mount="/"}', 0.72, 0.72)):
                sid = db.execute("SELECT id FROM series WHERE node = ? AND key = ?", (node, key)).fetchone()[0]
                hours = 7 * 24
                base = int(now // H * H) - hours * H
                db.executemany("INSERT OR REPLACE INTO samples_1h (series, ts, avg, min, max, n) VALUES (?, ?, ?, ?, ?, 60)",
                               [(sid, base + i * H, v, v, v) for i in range(hours)
                                for v in [start + (end - start) * i / (hours - 1)]])

        writer.run_sync(extras)
    finally:
        writer.stop()
    return now


def incident_events(inc: dict, now: float) -> list[wire.Event]:
    """An incident's events from its YAML: each {kind: ..., ago: seconds, ...fields}."""
    out: list[wire.Event] = []
    types = {t.__struct_config__.tag: t for t in wire.AnyEvent.__args__}  # type: ignore[attr-defined]
    for e in inc.get("events") or []:
        e = dict(e)
        kind, ago = e.pop("kind"), float(e.pop("ago", 60))
        if kind == "metrics":
            out.append(wire.Metrics(ts=now - ago, samples={str(k): float(v) for k, v in e["samples"].items()}))
        elif kind == "log":
            out.append(logl(now - ago, e.get("program"), e["message"], e.get("severity", 6)))
        elif kind == "pending_updates":
            out.append(wire.PendingUpdates(ts=now - ago, manager=e.get("manager", "apt"),
                                           updates=[wire.PendingUpdate(*u) for u in e["updates"]]))
        elif kind == "command":
            out.append(cmd(now - ago, e.get("user", "root"), e["command"], e.get("cwd", "/root"), e.get("exit_code", 0)))
        else:
            out.append(types[kind](ts=now - ago, **e))
    return out


def load_incidents(path: Path | str, incidents: list[dict], now: float) -> None:
    writer = Writer(path)
    writer.start()
    try:
        for inc in incidents:
            for name, addr in (inc.get("fleet") or {}).items():  # other enrolled nodes, with addresses
                writer.run_sync(lambda db, n=name, a=addr: db.execute(
                    "INSERT OR REPLACE INTO nodes (name, created, address) VALUES (?, ?, ?)", (n, now, a)))
            ingest(writer, inc["id"], incident_events(inc, now))
    finally:
        writer.stop()


def alert_of(inc: dict, now: float) -> dict[str, Any]:
    a = dict(inc["alert"])
    a.setdefault("id", int("".join(c for c in inc["id"] if c.isdigit()) or 0))
    a.update(node=inc["id"], state="firing", firing_at=now - 30, first_seen=now - 90)
    return a
