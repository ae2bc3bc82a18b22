"""Host metrics via psutil: CPU, memory, swap, load, per-mount disk usage, disk and network
I/O rates, temperatures where present, uptime. One ``metrics`` event per interval."""

from __future__ import annotations

import asyncio
import os
import time

import psutil

from agent import wire
from agent.collectors import Collector

# Pseudo and container filesystems say nothing about real disk space.
SKIP_FS = {"tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "cgroup", "cgroup2",
           "autofs", "devpts", "mqueue", "debugfs", "tracefs", "securityfs", "pstore", "bpf",
           "configfs", "fusectl", "hugetlbfs", "nsfs", "ramfs", "efivarfs", "binfmt_misc", "fuse.lxcfs"}


def _q(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


class MetricsCollector(Collector):
    name = "metrics"

    def __init__(self, settings, emit, state):
        super().__init__(settings, emit, state)
        if settings.metrics_interval < 1:
            raise ValueError(f"metrics_interval must be at least 1s, got {settings.metrics_interval}")
        self.interval = settings.metrics_interval
        self._prev_io: tuple[float, dict] | None = None
        psutil.cpu_percent(None)  # prime: the first call has no interval to measure

    def sample(self) -> dict[str, float]:
        s: dict[str, float] = {}
        s["cpu_percent"] = psutil.cpu_percent(None)
        vm = psutil.virtual_memory()
        s["memory_total_bytes"] = vm.total
        s["memory_available_bytes"] = vm.available
        s["memory_used_ratio"] = round(1 - vm.available / vm.total, 4) if vm.total else 0.0
        sw = psutil.swap_memory()
        s["swap_total_bytes"] = sw.total
        s["swap_used_ratio"] = round(sw.used / sw.total, 4) if sw.total else 0.0
        l1, l5, l15 = os.getloadavg()
        s["load1"], s["load5"], s["load15"] = l1, l5, l15
        s["uptime_seconds"] = round(time.time() - psutil.boot_time())
        seen = set()
        for p in psutil.disk_partitions(all=False):
            if p.fstype in SKIP_FS or p.device in seen:
                continue
            seen.add(p.device)
            try:
                u = psutil.disk_usage(p.mountpoint)
            except OSError:
                continue
            m = _q(p.mountpoint)
            s[f'disk_total_bytes{{mount="{m}"}}'] = u.total
            s[f'disk_free_bytes{{mount="{m}"}}'] = u.free
            s[f'disk_used_ratio{{mount="{m}"}}'] = round(u.used / (u.used + u.free), 4) if u.total else 0.0
        now = time.monotonic()
        io: dict[str, float] = {}
        d = psutil.disk_io_counters()
        if d:
            io["disk_read_bytes_per_second"] = d.read_bytes
            io["disk_write_bytes_per_second"] = d.write_bytes
        for nic, c in psutil.net_io_counters(pernic=True).items():
            if nic == "lo":
                continue
            io[f'net_receive_bytes_per_second{{iface="{_q(nic)}"}}'] = c.bytes_recv
            io[f'net_transmit_bytes_per_second{{iface="{_q(nic)}"}}'] = c.bytes_sent
        if self._prev_io:
            then, prev = self._prev_io
            dt = max(now - then, 1e-3)
            for k, v in io.items():
                if k in prev and v >= prev[k]:
                    s[k] = round((v - prev[k]) / dt, 1)
        self._prev_io = (now, io)
        temps: dict[str, list] = getattr(psutil, "sensors_temperatures", lambda: {})()
        for chip, entries in (temps or {}).items():
            for i, t in enumerate(entries):
                if t.current is not None:
                    label = _q(t.label or f"{chip}{i}")
                    s[f'temperature_celsius{{chip="{_q(chip)}",sensor="{label}"}}'] = t.current
        return s

    async def run(self) -> None:
        self.sample()  # baseline for the rates
        while True:
            await asyncio.sleep(self.interval)
            self.emit(wire.Metrics(ts=time.time(), samples=self.sample()))
