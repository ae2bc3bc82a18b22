"""The digital twin: each node's current packages, services, devices, mounts, disks,
interfaces, top processes and inventory, derived from events (tables from m110_twin).

Every state row carries the ``seq`` of the event that last wrote it, and every upsert is
guarded by ``excluded.seq >= seq``: the projector runs statements grouped by SQL, not in
event order, so the guard is what makes a batch holding several events for the same row
end in the state of the newest. Snapshot events (inventory, package inventory, pending
updates, processes) replace a node's set: upsert every row at the snapshot's seq, then
delete (or mark removed) the rows an older seq left behind.

Agents are trusted to be enrolled, not to be correct: facts arrive as free-form JSON, so
every value read from them is type-checked and a wrong one becomes NULL instead of an error
that would refuse the whole batch.
"""

from __future__ import annotations

import json
from typing import Any

from agent import wire
from hub.project import Projector, handles
from hub.twin import activity, facts  # noqa: F401 - their handlers register on import

# --- helpers --------------------------------------------------------------------------


def _str(v: Any, limit: int = 4096) -> str | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, str):
        return v[:limit]
    if isinstance(v, int | float):
        return str(v)
    return None


def _int(v: Any) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v if -(2**63) <= v < 2**63 else None
    if isinstance(v, float) and v == v and abs(v) < 2**63:
        return int(v)
    return None


def _num(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return None


def _dicts(v: Any, limit: int = 10_000) -> list[dict]:
    return [x for x in v[:limit] if isinstance(x, dict)] if isinstance(v, list) else []


def _get(d: Any, *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


# --- inventory ------------------------------------------------------------------------

INVENTORY_SQL = (
    "INSERT INTO inventory (node, hostname, os, kernel, arch, cpu_model, cpu_count, memory_bytes,"
    " swap_bytes, boot_time, primary_ip, tailscale_ip, facts, updated, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node) DO UPDATE SET hostname = excluded.hostname, os = excluded.os,"
    " kernel = excluded.kernel, arch = excluded.arch, cpu_model = excluded.cpu_model,"
    " cpu_count = excluded.cpu_count, memory_bytes = excluded.memory_bytes,"
    " swap_bytes = excluded.swap_bytes, boot_time = excluded.boot_time,"
    " primary_ip = excluded.primary_ip, tailscale_ip = excluded.tailscale_ip,"
    " facts = excluded.facts, updated = excluded.updated, seq = excluded.seq"
    " WHERE excluded.seq >= inventory.seq"
)
MOUNT_SQL = (
    "INSERT INTO mounts (node, mountpoint, device, fstype, options, total_bytes, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node, mountpoint) DO UPDATE SET device = excluded.device,"
    " fstype = excluded.fstype, options = excluded.options, total_bytes = excluded.total_bytes,"
    " seq = excluded.seq WHERE excluded.seq >= mounts.seq"
)
MOUNT_PRUNE_SQL = "DELETE FROM mounts WHERE node = ? AND seq < ?"
DISK_SQL = (
    "INSERT INTO disks (node, name, size_bytes, model, serial, rotational, removable, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node, name) DO UPDATE SET size_bytes = excluded.size_bytes,"
    " model = excluded.model, serial = excluded.serial, rotational = excluded.rotational,"
    " removable = excluded.removable, seq = excluded.seq WHERE excluded.seq >= disks.seq"
)
DISK_PRUNE_SQL = "DELETE FROM disks WHERE node = ? AND seq < ?"
IFACE_SQL = (
    "INSERT INTO interfaces (node, name, mac, mtu, up, speed_mbps, addresses, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node, name) DO UPDATE SET mac = excluded.mac, mtu = excluded.mtu,"
    " up = excluded.up, speed_mbps = excluded.speed_mbps, addresses = excluded.addresses,"
    " seq = excluded.seq WHERE excluded.seq >= interfaces.seq"
)
IFACE_PRUNE_SQL = "DELETE FROM interfaces WHERE node = ? AND seq < ?"


@handles(wire.Inventory)
def _inventory(p: Projector, node: str, seq: int, ts: float, ev: wire.Inventory) -> None:
    f = ev.facts
    os_name = _str(_get(f, "os", "pretty_name")) or _str(_get(f, "os", "name")) or _str(f.get("os"))
    p.emit(INVENTORY_SQL, (
        node, ev.hostname, os_name, _str(f.get("kernel")), _str(f.get("arch")),
        _str(_get(f, "cpu", "model")), _int(_get(f, "cpu", "count")),
        _int(f.get("memory_bytes")), _int(f.get("swap_bytes")), _num(f.get("boot_time")),
        _str(f.get("primary_ip")), _str(f.get("tailscale_ip")),
        json.dumps(f, default=str), ts, seq,
    ))
    for m in _dicts(f.get("mounts")):
        mp = _str(m.get("mountpoint"))
        if mp:
            p.emit(MOUNT_SQL, (node, mp, _str(m.get("device")), _str(m.get("fstype")),
                               _str(m.get("options")), _int(m.get("total_bytes")), seq))
    p.emit(MOUNT_PRUNE_SQL, (node, seq))
    for d in _dicts(f.get("disks")):
        name = _str(d.get("name"))
        if name:
            p.emit(DISK_SQL, (node, name, _int(d.get("size_bytes")), _str(d.get("model")),
                              _str(d.get("serial")), _int(d.get("rotational")),
                              _int(d.get("removable")), seq))
    p.emit(DISK_PRUNE_SQL, (node, seq))
    for i in _dicts(f.get("interfaces")):
        name = _str(i.get("name"))
        if name:
            addrs = i.get("addresses")
            addrs = " ".join(a for a in addrs if isinstance(a, str)) if isinstance(addrs, list) else None
            p.emit(IFACE_SQL, (node, name, _str(i.get("mac")), _int(i.get("mtu")), _int(i.get("up")),
                               _int(i.get("speed_mbps")), addrs, seq))
    p.emit(IFACE_PRUNE_SQL, (node, seq))


# --- packages -------------------------------------------------------------------------

PACKAGE_STATE_SQL = (
    "INSERT INTO packages (node, manager, name, arch, version, manual, state, changed, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node, manager, name, arch) DO UPDATE SET version = excluded.version,"
    " manual = coalesce(excluded.manual, packages.manual), state = excluded.state,"
    " changed = CASE WHEN packages.state = excluded.state AND packages.version IS excluded.version"
    "   THEN packages.changed ELSE excluded.changed END,"
    " seq = excluded.seq WHERE excluded.seq >= packages.seq"
)
PACKAGE_CHANGE_SQL = (
    "INSERT INTO package_changes (node, seq, ts, manager, action, name, arch, version, old_version,"
    " user, command) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A snapshot lists everything installed: whatever an older seq left marked installed is gone.
PACKAGE_PRUNE_SQL = (
    "UPDATE packages SET state = 'removed', changed = ?, seq = ?"
    " WHERE node = ? AND manager = ? AND state = 'installed' AND seq < ?"
)


@handles(wire.Package)
def _package(p: Projector, node: str, seq: int, ts: float, ev: wire.Package) -> None:
    p.emit(PACKAGE_CHANGE_SQL, (node, seq, ts, ev.manager, ev.action, ev.name, ev.arch,
                                ev.version, ev.old_version, ev.user, ev.command))
    if ev.action in ("remove", "purge"):
        state = "purged" if ev.action == "purge" else "removed"
        version = ev.old_version or ev.version
    else:
        state, version = "installed", ev.version
    p.emit(PACKAGE_STATE_SQL, (node, ev.manager, ev.name, ev.arch or "", version, None, state, ts, seq))


@handles(wire.PackageInventory)
def _package_inventory(p: Projector, node: str, seq: int, ts: float, ev: wire.PackageInventory) -> None:
    for pkg in ev.packages:
        p.emit(PACKAGE_STATE_SQL, (node, ev.manager, pkg.name, pkg.arch, pkg.version,
                                   int(pkg.manual), "installed", ts, seq))
    p.emit(PACKAGE_PRUNE_SQL, (ts, seq, node, ev.manager, seq))


PENDING_SQL = (
    "INSERT INTO pending_updates (node, manager, name, current, candidate, security, checked, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node, manager, name) DO UPDATE SET current = excluded.current,"
    " candidate = excluded.candidate, security = excluded.security, checked = excluded.checked,"
    " seq = excluded.seq WHERE excluded.seq >= pending_updates.seq"
)
PENDING_PRUNE_SQL = "DELETE FROM pending_updates WHERE node = ? AND manager = ? AND seq < ?"


@handles(wire.PendingUpdates)
def _pending(p: Projector, node: str, seq: int, ts: float, ev: wire.PendingUpdates) -> None:
    for u in ev.updates:
        p.emit(PENDING_SQL, (node, ev.manager, u.name, u.current, u.candidate, int(u.security), ts, seq))
    p.emit(PENDING_PRUNE_SQL, (node, ev.manager, seq))


# --- services -------------------------------------------------------------------------

SERVICE_SQL = (
    "INSERT INTO services (node, unit, active, sub, result, restarts, enabled, changed, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node, unit) DO UPDATE SET active = excluded.active, sub = excluded.sub,"
    " result = excluded.result, restarts = excluded.restarts,"
    " enabled = coalesce(excluded.enabled, services.enabled), changed = excluded.changed,"
    " seq = excluded.seq WHERE excluded.seq >= services.seq"
)
SERVICE_CHANGE_SQL = (
    "INSERT INTO service_changes (node, seq, ts, unit, active, previous, sub, result, restarts)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@handles(wire.Service)
def _service(p: Projector, node: str, seq: int, ts: float, ev: wire.Service) -> None:
    p.emit(SERVICE_SQL, (node, ev.unit, ev.active, ev.sub, ev.result, ev.restarts, ev.enabled, ts, seq))
    # The collector's first look at a unit (previous is None) is a baseline, not a change.
    if ev.previous is not None:
        p.emit(SERVICE_CHANGE_SQL, (node, seq, ts, ev.unit, ev.active, ev.previous, ev.sub,
                                    ev.result, ev.restarts))


# --- devices --------------------------------------------------------------------------

DEVICE_SQL = (
    "INSERT INTO devices (node, sys_path, subsystem, devtype, dev_node, vendor, model, serial,"
    " driver, bus, present, changed, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node, sys_path) DO UPDATE SET subsystem = excluded.subsystem,"
    " devtype = coalesce(excluded.devtype, devices.devtype),"
    " dev_node = coalesce(excluded.dev_node, devices.dev_node),"
    " vendor = coalesce(excluded.vendor, devices.vendor),"
    " model = coalesce(excluded.model, devices.model),"
    " serial = coalesce(excluded.serial, devices.serial),"
    " driver = CASE WHEN excluded.present THEN coalesce(excluded.driver, devices.driver) ELSE devices.driver END,"
    " bus = coalesce(excluded.bus, devices.bus), present = excluded.present,"
    " changed = excluded.changed, seq = excluded.seq WHERE excluded.seq >= devices.seq"
)
DEVICE_CHANGE_SQL = (
    "INSERT INTO device_changes (node, seq, ts, action, subsystem, sys_path, devtype, dev_node,"
    " vendor, model, serial, driver, source, old_sys_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
DEVICE_GONE_SQL = "UPDATE devices SET present = 0, changed = ?, seq = ? WHERE node = ? AND sys_path = ? AND seq < ?"
# "present" is the collector's baseline at first start: state, not history.
BASELINE_ACTIONS = frozenset({"present"})


@handles(wire.Device)
def _device(p: Projector, node: str, seq: int, ts: float, ev: wire.Device) -> None:
    present = 0 if ev.action == "remove" else 1
    p.emit(DEVICE_SQL, (node, ev.sys_path, ev.subsystem, ev.devtype, ev.dev_node, ev.vendor,
                        ev.model, ev.serial, ev.driver, ev.bus, present, ts, seq))
    if ev.action == "move" and ev.old_sys_path:  # renamed: nothing is at the old path now
        p.emit(DEVICE_GONE_SQL, (ts, seq, node, ev.old_sys_path, seq))
    if ev.action not in BASELINE_ACTIONS:
        p.emit(DEVICE_CHANGE_SQL, (node, seq, ts, ev.action, ev.subsystem, ev.sys_path, ev.devtype,
                                   ev.dev_node, ev.vendor, ev.model, ev.serial, ev.driver, ev.source,
                                   ev.old_sys_path))


# --- processes ------------------------------------------------------------------------

PROCESS_SQL = (
    "INSERT INTO processes (node, pid, rank, name, user, cpu_percent, rss_bytes, cmdline, ts, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node, pid) DO UPDATE SET rank = excluded.rank, name = excluded.name,"
    " user = excluded.user, cpu_percent = excluded.cpu_percent, rss_bytes = excluded.rss_bytes,"
    " cmdline = excluded.cmdline, ts = excluded.ts, seq = excluded.seq"
    " WHERE excluded.seq >= processes.seq"
)
PROCESS_PRUNE_SQL = "DELETE FROM processes WHERE node = ? AND seq < ?"


@handles(wire.Processes)
def _processes(p: Projector, node: str, seq: int, ts: float, ev: wire.Processes) -> None:
    for rank, pr in enumerate(ev.top, 1):
        p.emit(PROCESS_SQL, (node, pr.pid, rank, pr.name, pr.user, pr.cpu_percent, pr.rss,
                             pr.cmdline, ts, seq))
    p.emit(PROCESS_PRUNE_SQL, (node, seq))
