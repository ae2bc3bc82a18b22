"""What the metrics and inventory collectors read of the machine, straight from /proc, /sys
and netlink (the agent is Linux-only).

psutil computed the same figures but cost the running agent 0.6-0.9 MB of imported code for
a dozen file reads (docs/performance.md). Each function here follows psutil 7's Linux code
(``psutil/_pslinux.py``) where the agent ships what it returned, so the events keep their
meaning; ``tests/agent/test_sysinfo.py`` compares both on the machine the tests run on.
"""

from __future__ import annotations

import array
import fcntl
import os
import re
import socket
import struct

CLK_TCK = os.sysconf("SC_CLK_TCK")
SECTOR = 512  # /proc/diskstats counts 512-byte sectors whatever the disk's own size


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes, keyed without the colon."""
    out = {}
    with open("/proc/meminfo", "rb") as f:
        for line in f:
            fields = line.split()
            out[fields[0].rstrip(b":").decode()] = int(fields[1]) * 1024
    return out


def virtual_memory(m: dict[str, int] | None = None) -> tuple[int, int, int, float]:
    """(total, available, used, percent) as psutil.virtual_memory() computes them: used is
    total - available. Kernels since 3.14 give MemAvailable; psutil estimates it on older
    ones and when it reads 0, and so do we, more simply (free + buffers + cached)."""
    m = meminfo() if m is None else m
    total, free = m["MemTotal"], m["MemFree"]
    avail = m.get("MemAvailable", 0)
    if not avail:
        avail = free + m.get("Buffers", 0) + m.get("Cached", 0) + m.get("SReclaimable", 0)
    if avail > total:  # an LXC container's view: psutil (and free) fall back to MemFree
        avail = free
    used = total - avail
    return total, avail, used, round(used / total * 100, 1) if total else 0.0


def swap_memory(m: dict[str, int] | None = None) -> tuple[int, int]:
    """(total, used) swap in bytes."""
    m = meminfo() if m is None else m
    total = m.get("SwapTotal", 0)
    return total, total - m.get("SwapFree", 0)


def boot_time() -> float:
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime"):
                return float(line.split()[1])
    raise RuntimeError("no btime line in /proc/stat")


def cpu_times() -> list[float]:
    """The machine's CPU seconds since boot, /proc/stat's first line: user, nice, system,
    idle, iowait, irq, softirq, steal, guest, guest_nice."""
    with open("/proc/stat", "rb") as f:
        return [int(x) / CLK_TCK for x in f.readline().split()[1:11]]


class CpuPercent:
    """Busy percent of all CPUs since the previous call, psutil.cpu_percent(None)'s
    arithmetic: each field's delta floored at 0 (iowait can go backwards), guest time left
    out of the total (user and nice include it), idle and iowait not busy. The first call
    has nothing to compare with and returns 0.0."""

    def __init__(self) -> None:
        self.last: list[float] | None = None

    def __call__(self) -> float:
        now = cpu_times()
        last, self.last = self.last or now, now
        d = [max(0.0, b - a) for a, b in zip(last, now, strict=False)]
        total = sum(d) - sum(d[8:10])
        busy = total - d[3] - (d[4] if len(d) > 4 else 0.0)
        return round(busy / total * 100, 1) if total else 0.0


def disk_usage(path: str) -> tuple[int, int, int]:
    """(total, used, free) in bytes, psutil's (and df's) way: used is what is written, free
    what an unprivileged user may still write; root's reserve (ext4's 5 %) is in neither."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_bavail * st.f_frsize


def disk_io() -> tuple[int, int] | None:
    """(read, written) bytes summed over whole disks, partitions left out (a partition's I/O
    is in its disk's too); a device counts as a disk when /sys/block has it, as psutil
    decides. None on a machine with no disk."""
    read = written = 0
    found = False
    with open("/proc/diskstats", "rb") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 7:
                continue
            name = fields[2].decode(errors="replace").replace("/", "!")
            if not os.access(f"/sys/block/{name}", os.F_OK):
                continue
            found = True
            if len(fields) == 7:  # a 2.6 partition line: reads, sectors read, writes, sectors written
                read, written = read + int(fields[4]), written + int(fields[6])
            else:
                read, written = read + int(fields[5]), written + int(fields[9])
    return (read * SECTOR, written * SECTOR) if found else None


def net_io() -> dict[str, tuple[int, int]]:
    """{interface: (bytes received, bytes sent)} from /proc/net/dev."""
    out = {}
    with open("/proc/net/dev") as f:
        for line in f.readlines()[2:]:
            colon = line.rfind(":")
            fields = line[colon + 1:].split()
            out[line[:colon].strip()] = (int(fields[0]), int(fields[8]))
    return out


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _temp_bases(top: str) -> list[str]:
    """psutil's glob of ``hwmon*/temp*_*`` and ``hwmon*/device/temp*_*``, each file cut at its
    first underscore (``temp1_input`` -> ``temp1``)."""
    out: set[str] = set()
    try:
        chips = [d for d in os.listdir(top) if d.startswith("hwmon")]
    except OSError:
        return []
    for chip in chips:
        for sub in (f"{top}/{chip}", f"{top}/{chip}/device"):
            try:
                names = os.listdir(sub)
            except OSError:
                continue
            out.update(f"{sub}/{n.split('_')[0]}" for n in names if n.startswith("temp") and "_" in n)
    return sorted(out)


def temperatures(hwmon: str = "/sys/class/hwmon",
                 thermal: str = "/sys/class/thermal") -> dict[str, list[tuple[str, float]]]:
    """{chip: [(label, celsius), ...]} as psutil.sensors_temperatures() groups them: hwmon
    sensors by the chip's name, in path order; thermal zones only when there is no hwmon.
    (psutil also globs coretemp's platform directory, but with whole file names whose
    ``_input`` never exists, so that adds nothing.)"""
    out: dict[str, list[tuple[str, float]]] = {}
    bases = _temp_bases(hwmon)
    for base in bases:
        chip, celsius = _read(f"{os.path.dirname(base)}/name"), _celsius(f"{base}_input")
        if chip is not None and celsius is not None:
            out.setdefault(chip, []).append((_read(f"{base}_label") or "", celsius))
    if bases:
        return out
    try:
        zones = sorted(z for z in os.listdir(thermal) if z.startswith("thermal_zone"))
    except OSError:
        zones = []
    for zone in zones:
        kind, celsius = _read(f"{thermal}/{zone}/type"), _celsius(f"{thermal}/{zone}/temp")
        if kind is not None and celsius is not None:
            out.setdefault(kind, []).append(("", celsius))
    return out


def _celsius(path: str) -> float | None:
    """A sysfs temperature file (millidegrees), None where the sensor gives no reading."""
    try:
        return float(_read(path) or "") / 1000
    except ValueError:
        return None


_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """The mount table writes space, tab, newline and backslash as \\040, \\011, \\012, \\134."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field) if "\\" in field else field


def mounts() -> list[tuple[str, str, str, str]]:
    """(device, mountpoint, fstype, options) of every mount this process sees, in the mount
    table's order, with psutil's device names: "" for "none", the real device for /dev/root."""
    out: list[tuple[str, str, str, str]] = []
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 4:
                continue
            device, mountpoint, fstype, opts = (_unescape(x) for x in fields[:4])
            if device == "none":
                device = ""
            elif device in ("/dev/root", "rootfs"):
                device = _root_device() or device
            out.append((device, mountpoint, fstype, opts))
    return out


def _root_device() -> str | None:
    """The block device / is on, from /proc/partitions or /sys/dev/block (psutil's first two
    ways; a Raspberry Pi's kernel mounts its root as /dev/root)."""
    dev = os.stat("/").st_dev
    major, minor = os.major(dev), os.minor(dev)
    name = None
    try:
        with open("/proc/partitions") as f:
            for line in f.readlines()[2:]:
                fields = line.split()
                if len(fields) >= 4 and fields[0] == str(major) and fields[1] == str(minor):
                    name = fields[3]
                    break
    except OSError:
        pass
    if name is None:
        uevent = _read(f"/sys/dev/block/{major}:{minor}/uevent") or ""
        name = next((ln[8:] for ln in uevent.splitlines() if ln.startswith("DEVNAME=")), None)
    path = f"/dev/{name}" if name else None
    return path if path and os.path.exists(path) else None


# rtnetlink: the same dump `ip link` and `ip addr` (and glibc's getifaddrs, psutil's source)
# ask the kernel for. Linux's uapi headers: linux/netlink.h, linux/rtnetlink.h, if_addr.h.
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
NLM_F_REQUEST_DUMP = 0x1 | 0x300
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU = 1, 3, 4
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_FLAGS = 1, 2, 3, 8
IFA_F_TEMPORARY = 0x01
IFF_RUNNING = 0x40


def _dump(request: int, body: bytes) -> list[tuple[int, bytes]]:
    """(message type, payload) of every message the kernel answers a dump request with."""
    out: list[tuple[int, bytes]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.sendall(struct.pack("=IHHII", 16 + len(body), request, NLM_F_REQUEST_DUMP, 1, 0) + body)
        while True:
            data = s.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", data, off + 16)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                else:
                    out.append((kind, data[off + 16:off + length]))
                off += (length + 3) & ~3
            if not data:
                return out


def _attrs(payload: bytes, start: int) -> dict[int, bytes]:
    out = {}
    while start + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, start)
        if length < 4:
            break
        out[kind] = payload[start + 4:start + length]
        start += (length + 3) & ~3
    return out


def links() -> dict[str, tuple[str | None, int, bool]]:
    """{interface: (MAC or None, MTU, running)} for every interface in this network namespace.
    Running is IFF_RUNNING, what psutil.net_if_stats() calls isup: up, with a carrier."""
    out = {}
    for kind, p in _dump(RTM_GETLINK, struct.pack("=BxHiII", 0, 0, 0, 0, 0)):
        if kind != RTM_NEWLINK:
            continue
        flags = struct.unpack_from("=I", p, 8)[0]
        a = _attrs(p, 16)
        if IFLA_IFNAME not in a:
            continue
        mac = a.get(IFLA_ADDRESS)
        out[a[IFLA_IFNAME].rstrip(b"\0").decode(errors="replace")] = (
            ":".join(f"{b:02x}" for b in mac) if mac else None,
            struct.unpack("=I", a[IFLA_MTU])[0] if IFLA_MTU in a else 0,
            bool(flags & IFF_RUNNING))
    return out


def addresses(temporary: bool = True) -> list[tuple[str, str, int]]:
    """(interface, address, prefix length) of every IPv4 and IPv6 address. An IPv4 address
    with a label (``ip addr add ... label eth0:1``) is under its label, as getifaddrs gives it.
    ``temporary=False`` leaves out IPv6 privacy addresses (RFC 8981), which the kernel
    replaces every day or so."""
    out = []
    for kind, p in _dump(RTM_GETADDR, struct.pack("=BBBBI", 0, 0, 0, 0, 0)):
        if kind != RTM_NEWADDR:
            continue
        family, prefix, flags, _, index = struct.unpack_from("=BBBBI", p)
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        a = _attrs(p, 8)
        if IFA_FLAGS in a:  # the full 32 bits; the header's byte holds the low 8
            flags = struct.unpack_from("=I", a[IFA_FLAGS])[0]
        if not temporary and flags & IFA_F_TEMPORARY:
            continue
        raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)  # IFA_ADDRESS is the peer's on a point-to-point link
        if raw is None:
            continue
        if IFA_LABEL in a:
            name = a[IFA_LABEL].rstrip(b"\0").decode(errors="replace")
        else:
            try:
                name = socket.if_indextoname(index)
            except OSError:
                continue  # gone since the dump
        out.append((name, socket.inet_ntop(family, raw), prefix))
    return out


SIOCETHTOOL, ETHTOOL_GSET = 0x8946, 1


def link_speed(name: str) -> int:
    """Mb/s as ethtool reports it, 0 when unknown or unsupported (psutil's figure). The ioctl
    answers for an interface that is down, where /sys/class/net/NAME/speed gives EINVAL."""
    cmd = array.array("B", struct.pack("=I", ETHTOOL_GSET) + bytes(40))  # struct ethtool_cmd
    ifreq = struct.pack("16sP", name.encode()[:15], cmd.buffer_info()[0])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s, SIOCETHTOOL, ifreq + bytes(40 - len(ifreq)))
    except OSError:
        return 0
    speed = struct.unpack_from("=H", cmd, 12)[0] | struct.unpack_from("=H", cmd, 28)[0] << 16
    return 0 if speed == 0xFFFFFFFF else speed
