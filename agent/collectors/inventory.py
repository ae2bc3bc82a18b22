"""Inventory: hostname, OS release, kernel, CPU, memory, disks, mounts, interfaces and
addresses (a Tailscale 100.x address when there is one).

Sent once at start and then only when it changes: the facts are re-gathered every
``inventory_interval`` (a few file reads, no subprocess) and compared by hash. Nothing
that moves by itself (free space, uptime, counters) is in the facts, or every check would
look like a change; metrics carry those.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import socket
import time
from typing import Any

from agent import sysinfo, wire
from agent.collectors import Collector
from agent.collectors.metrics import filesystems, network_mounts

TAILNET = ipaddress.ip_network("100.64.0.0/10")  # Tailscale hands out CGNAT addresses
SKIP_BLOCK = ("loop", "ram", "zram", "fd", "sr")  # not disks a person would list


def _read(path: str, default: str | None = None) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return default


def os_release(path: str = "/etc/os-release") -> dict[str, str]:
    """The os-release(5) fields that name the OS (quotes and escapes removed)."""
    text = _read(path) or _read("/usr/lib/os-release") or ""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if key in ("ID", "ID_LIKE", "NAME", "PRETTY_NAME", "VERSION_ID", "VERSION_CODENAME"):
            out[key.lower()] = value
    return out


def cpu_model() -> str | None:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "cpu model", "Processor"):
            return value.strip()
    return None


def disks() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        names = sorted(os.listdir("/sys/block"))
    except OSError:
        return out
    for name in names:
        if name.startswith(SKIP_BLOCK):
            continue
        base = f"/sys/block/{name}"
        sectors = _read(f"{base}/size", "0")
        out.append({
            "name": name,
            "size_bytes": int(sectors) * 512 if sectors and sectors.isdigit() else None,
            "model": _read(f"{base}/device/model"),
            "serial": _read(f"{base}/device/serial"),
            "rotational": _read(f"{base}/queue/rotational") == "1",
            "removable": _read(f"{base}/removable") == "1",
        })
    return out


def mounts() -> list[dict[str, Any]]:
    out = []
    for mountpoint, device, fstype, options in filesystems():
        try:
            total = sysinfo.disk_usage(mountpoint)[0]
        except OSError:
            total = None
        out.append({"mountpoint": mountpoint, "device": device, "fstype": fstype,
                    "options": options, "total_bytes": total})
    out += [{"mountpoint": m, "device": d, "fstype": t, "options": o, "total_bytes": None}
            for m, d, t, o in network_mounts()]
    return out


def default_route_interface() -> str | None:
    text = _read("/proc/net/route") or ""
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) > 2 and f[1] == "00000000":
            return f[0]
    return None


def interfaces() -> tuple[list[dict[str, Any]], str | None, str | None]:
    """(interfaces with their IPv4 and IPv6 addresses, primary IPv4, Tailscale IPv4)."""
    links = sysinfo.links()
    nets: dict[str, list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]] = {}
    # psutil listed an interface with a MAC or an address (not a tun device with neither)
    names = {n for n, (mac, _, _) in links.items() if mac is not None}
    for name, address, prefix in sysinfo.addresses(temporary=False):  # they'd change daily
        names.add(name)
        nets.setdefault(name, []).append(ipaddress.ip_interface(f"{address}/{prefix}"))
    out: list[dict[str, Any]] = []
    tailscale = None
    for name in sorted(names):
        cidrs = sorted(nets.get(name, []), key=lambda n: (n.version, n))  # IPv4 first
        for net in cidrs:
            if net.version == 4 and net.ip in TAILNET and (tailscale is None or name.startswith("tailscale")):
                tailscale = str(net.ip)
        mac, mtu, running = links.get(name, (None, None, False))
        speed = sysinfo.link_speed(name) if name in links else 0
        out.append({
            "name": name, "mac": mac, "mtu": mtu, "up": running, "speed_mbps": speed or None,
            "addresses": [f"{n.ip}/{n.network.prefixlen}" for n in cidrs],
        })
    primary = None
    dev = default_route_interface()
    for i in out:
        if i["name"] == dev:
            primary = next((a.split("/")[0] for a in i["addresses"] if ":" not in a), None)
    return out, primary, tailscale


def virtualization() -> str | None:
    """A cheap guess (systemd-detect-virt is not everywhere): container markers, then DMI."""
    if os.path.exists("/.dockerenv"):
        return "docker"
    if os.path.exists("/run/.containerenv"):
        return "podman"
    product = (_read("/sys/class/dmi/id/product_name") or "") + " " + (_read("/sys/class/dmi/id/sys_vendor") or "")
    for needle, name in (("KVM", "kvm"), ("QEMU", "qemu"), ("VMware", "vmware"), ("VirtualBox", "oracle"),
                         ("Virtual Machine", "microsoft"), ("Xen", "xen"), ("Firecracker", "firecracker")):
        if needle in product:
            return name
    cpuinfo = _read("/proc/cpuinfo") or ""
    return "vm" if " hypervisor" in cpuinfo else None


def gather() -> tuple[str, dict[str, Any]]:
    u = os.uname()
    ifaces, primary, tailscale = interfaces()
    mem = sysinfo.meminfo()
    facts: dict[str, Any] = {
        "os": os_release(),
        "kernel": u.release,
        "kernel_version": u.version,
        "arch": u.machine,
        "cpu": {"model": cpu_model(), "count": os.cpu_count()},
        "memory_bytes": mem["MemTotal"],
        "swap_bytes": mem.get("SwapTotal", 0),
        "boot_time": round(sysinfo.boot_time()),
        "virtualization": virtualization(),
        "machine_id": _read("/etc/machine-id"),
        "disks": disks(),
        "mounts": mounts(),
        "interfaces": ifaces,
        "primary_ip": primary,
        "tailscale_ip": tailscale,
    }
    return socket.gethostname(), facts


def digest(hostname: str, facts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([hostname, facts], sort_keys=True, default=str).encode()).hexdigest()


class InventoryCollector(Collector):
    name = "inventory"

    def __init__(self, settings, emit, state):
        super().__init__(settings, emit, state)
        if settings.inventory_interval < 10:
            raise ValueError(f"inventory_interval must be at least 10s, got {settings.inventory_interval}")
        self.interval = settings.inventory_interval

    def check(self, force: bool = False) -> bool:
        """Gather; emit when forced or changed. Returns whether an event was emitted."""
        hostname, facts = gather()
        h = digest(hostname, facts)
        if not force and h == self.state.get("inventory.hash"):
            return False
        if self.emit(wire.Inventory(ts=time.time(), hostname=hostname, facts=facts)):
            self.state.set("inventory.hash", h)
            return True
        return False

    async def run(self) -> None:
        self.check(force=True)  # at start: the hub may be new, or may have missed the last one
        while True:
            await asyncio.sleep(self.interval)
            self.check()
