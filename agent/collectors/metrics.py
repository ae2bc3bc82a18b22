"""Host metrics from /proc and /sys (``agent.sysinfo``): CPU, memory, swap, load, per-mount
disk usage, disk and network I/O rates, temperatures where present, uptime. One ``metrics``
event per interval."""

from __future__ import annotations

import asyncio
import os
import stat
import time

from agent import sysinfo, wire
from agent.collectors import Collector

# Filesystems that hold no files anyone writes, or whose fullness means nothing (read-only
# images are always full; ramfs has no size).
SKIP_FS = {"devtmpfs", "squashfs", "erofs", "iso9660", "udf", "proc", "sysfs", "cgroup", "cgroup2",
           "autofs", "devpts", "mqueue", "debugfs", "tracefs", "securityfs", "pstore", "bpf",
           "configfs", "fusectl", "hugetlbfs", "nsfs", "ramfs", "efivarfs", "binfmt_misc",
           "fuse.lxcfs", "rpc_pipefs", "nfsd", "selinuxfs"}
# Another machine's disk: the NAS reports its own, and a stat of a hung NFS or CIFS mount
# blocks (this collector runs on the agent's event loop). psutil's all=False left them out;
# reading every mount must too.
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs",
              "fuse.glusterfs", "fuse.sshfs", "sshfs", "fuse.rclone", "davfs", "fuse.s3fs", "lustre"}
# Mounts below these are the system's own plumbing (cgroups, /dev, systemd's credentials, a
# container manager's view of its host), not space anyone fills; /run and /dev/shm are.
SYSTEM_TREES = ("/proc/", "/sys/", "/dev/", "/run/")
SYSTEM_KEEP = {"/dev/shm"}
# A container engine mounts a tmpfs or an overlay per container (Docker's .../merged and shm,
# kubelet's secrets): only these are the machine's own. An overlay root is a container's.
OWN_TMPFS = {"/tmp", "/var/tmp", "/run", "/dev/shm"}


def network_mounts() -> list[tuple[str, str, str, str]]:
    """(mountpoint, device, fstype, options) of the network filesystems mounted here, from the
    mount table alone: never statted (a hung NAS would block), never sized (the NAS reports
    its own disk). The twin lists them; disk metrics do not."""
    return [(m, d, t, o) for d, m, t, o in sysinfo.mounts() if t in NETWORK_FS]


def filesystems() -> list[tuple[str, str, str, str]]:
    """(mountpoint, device, fstype, options) once per filesystem this process sees.

    All mounts are considered, not only those on a block device (psutil's ``all=False``): in a
    container or a VM with an overlay root the root and a tmpfs /tmp are what fill up, and
    ``all=False`` saw only bind mounts of the host's disk (systemd-nspawn's
    /run/host/os-release, a file), so the host's disk was reported under the container's name
    and its own never (found in the node lab). A filesystem mounted at several places (bind
    mounts, the agent's PrivateTmp= /tmp on the real /tmp) is reported once, at the first
    of its mounts in the mount table; mounts of a single file are skipped."""
    out, seen = [], set()
    for device, m, fstype, opts in sysinfo.mounts():
        if fstype in SKIP_FS or fstype in NETWORK_FS or m in ("/proc", "/sys", "/dev"):
            continue
        if m.startswith(SYSTEM_TREES) and m not in SYSTEM_KEEP:
            continue
        if (fstype == "tmpfs" and m not in OWN_TMPFS) or (fstype == "overlay" and m != "/"):
            continue
        try:
            st = os.stat(m)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_dev in seen:
            continue
        seen.add(st.st_dev)
        out.append((m, device, fstype, opts))
    return out


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
        self.cpu_percent = sysinfo.CpuPercent()
        self.cpu_percent()  # prime: the first call has no interval to measure

    def sample(self) -> dict[str, float]:
        s: dict[str, float] = {}
        s["cpu_percent"] = self.cpu_percent()
        mem = sysinfo.meminfo()
        total, available, _, _ = sysinfo.virtual_memory(mem)
        s["memory_total_bytes"] = total
        s["memory_available_bytes"] = available
        s["memory_used_ratio"] = round(1 - available / total, 4) if total else 0.0
        swap_total, swap_used = sysinfo.swap_memory(mem)
        s["swap_total_bytes"] = swap_total
        s["swap_used_ratio"] = round(swap_used / swap_total, 4) if swap_total else 0.0
        l1, l5, l15 = os.getloadavg()
        s["load1"], s["load5"], s["load15"] = l1, l5, l15
        s["uptime_seconds"] = round(time.time() - sysinfo.boot_time())
        for mountpoint, *_ in filesystems():
            try:
                total, used, free = sysinfo.disk_usage(mountpoint)
            except OSError:
                continue
            m = _q(mountpoint)
            s[f'disk_total_bytes{{mount="{m}"}}'] = total
            s[f'disk_free_bytes{{mount="{m}"}}'] = free
            s[f'disk_used_ratio{{mount="{m}"}}'] = round(used / (used + free), 4) if total else 0.0
        now = time.monotonic()
        io: dict[str, float] = {}
        d = sysinfo.disk_io()
        if d:
            io["disk_read_bytes_per_second"], io["disk_write_bytes_per_second"] = d
        for nic, (received, sent) in sysinfo.net_io().items():
            if nic == "lo":
                continue
            io[f'net_receive_bytes_per_second{{iface="{_q(nic)}"}}'] = received
            io[f'net_transmit_bytes_per_second{{iface="{_q(nic)}"}}'] = sent
        if self._prev_io:
            then, prev = self._prev_io
            dt = max(now - then, 1e-3)
            for k, v in io.items():
                if k in prev and v >= prev[k]:
                    s[k] = round((v - prev[k]) / dt, 1)
        self._prev_io = (now, io)
        for chip, entries in sysinfo.temperatures().items():
            for i, (label, celsius) in enumerate(entries):
                sensor = _q(label or f"{chip}{i}")
                s[f'temperature_celsius{{chip="{_q(chip)}",sensor="{sensor}"}}'] = celsius
        return s

    async def run(self) -> None:
        self.sample()  # baseline for the rates
        while True:
            await asyncio.sleep(self.interval)
            self.emit(wire.Metrics(ts=time.time(), samples=self.sample()))
