"""agent.sysinfo against psutil on this machine: the figures the agent ships must mean what
they meant when psutil computed them. Totals exactly; moving values within a tolerance."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from agent import sysinfo

ROOT = Path(__file__).resolve().parents[2]


def test_memory_and_swap():
    for _ in range(5):  # memory moves between the two reads; retry until a quiet moment
        vm, (total, avail, used, percent) = psutil.virtual_memory(), sysinfo.virtual_memory()
        if abs(vm.available - avail) < 4 * 2**20:
            break
    assert total == vm.total
    assert abs(avail - vm.available) < 4 * 2**20 and abs(used - vm.used) < 4 * 2**20
    assert abs(percent - vm.percent) <= 0.2
    sw = psutil.swap_memory()
    stotal, sused = sysinfo.swap_memory()
    assert stotal == sw.total and abs(sused - sw.used) < 4 * 2**20


def test_virtual_memory_without_memavailable():
    m = {"MemTotal": 1000, "MemFree": 100, "Buffers": 50, "Cached": 200, "SReclaimable": 10}
    assert sysinfo.virtual_memory(m) == (1000, 360, 640, 64.0)
    # an LXC container's meminfo can claim more available than total: psutil takes MemFree
    assert sysinfo.virtual_memory({"MemTotal": 1000, "MemFree": 100, "MemAvailable": 5000})[1] == 100


def test_boot_time():
    assert sysinfo.boot_time() == psutil.boot_time()


def test_cpu_percent_since_last_call():
    cpu = sysinfo.CpuPercent()
    assert cpu() == 0.0  # nothing to compare with yet
    psutil.cpu_percent(None)
    end = time.monotonic() + 0.5
    while time.monotonic() < end:  # keep one core busy: both must see it
        pass
    mine, theirs = cpu(), psutil.cpu_percent(None)
    assert 0.0 < mine <= 100.0
    assert abs(mine - theirs) <= 10.0, (mine, theirs)


def test_disk_usage_of_every_mount():
    seen = 0
    for _, mountpoint, fstype, _ in sysinfo.mounts():
        if fstype in ("nfs", "nfs4", "cifs", "autofs") or not os.path.isdir(mountpoint):
            continue
        try:
            theirs = psutil.disk_usage(mountpoint)
        except OSError:
            continue
        total, used, free = sysinfo.disk_usage(mountpoint)
        assert total == theirs.total, mountpoint
        assert abs(used - theirs.used) < 16 * 2**20 and abs(free - theirs.free) < 16 * 2**20, mountpoint
        seen += 1
    assert seen


def test_mount_table_matches_psutil():
    theirs = [(p.device, p.mountpoint, p.fstype, p.opts) for p in psutil.disk_partitions(all=True)]
    assert sysinfo.mounts() == theirs


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_mount_points_with_spaces_are_unescaped(tmp_path):
    d = tmp_path / "a dir\twith tab"
    d.mkdir()
    code = "import json; from agent import sysinfo; print(json.dumps([m[1] for m in sysinfo.mounts()]))"
    r = subprocess.run(["unshare", "-m", "sh", "-c",
                        f"mount --make-rprivate / && mount -t tmpfs tmpfs '{d}' && exec {sys.executable} -c '{code}'"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert str(d) in json.loads(r.stdout)  # the table says a\040dir\011with\040tab


def test_disk_io_counts_whole_disks_only():
    theirs = psutil.disk_io_counters()
    mine = sysinfo.disk_io()
    if theirs is None:
        assert mine is None
        return
    assert mine is not None
    # the counters move between the two reads: never backwards, not by much
    assert 0 <= mine[0] - theirs.read_bytes < 64 * 2**20
    assert 0 <= mine[1] - theirs.write_bytes < 256 * 2**20


def test_net_io_per_interface():
    theirs = psutil.net_io_counters(pernic=True)
    mine = sysinfo.net_io()
    assert set(mine) == set(theirs)
    for nic, (recv, sent) in mine.items():
        assert 0 <= recv - theirs[nic].bytes_recv < 2**20 and 0 <= sent - theirs[nic].bytes_sent < 2**20


def test_temperatures():
    theirs = psutil.sensors_temperatures()
    mine = sysinfo.temperatures()
    assert list(mine) == list(theirs)
    for chip, entries in mine.items():
        assert [label for label, _ in entries] == [t.label for t in theirs[chip]]
        for (_, value), t in zip(entries, theirs[chip], strict=True):
            assert abs(value - t.current) <= 5.0


def _prefix(netmask: str) -> int:
    return bin(int(ipaddress.ip_address(netmask))).count("1")


def test_links_and_addresses_match_psutil():
    addrs, stats = psutil.net_if_addrs(), psutil.net_if_stats()
    links = sysinfo.links()
    mine: dict[str, set] = {}
    for name, address, prefix in sysinfo.addresses():
        mine.setdefault(name, set()).add((address, prefix))
    for name, entries in addrs.items():
        mac = next((a.address for a in entries if a.family == psutil.AF_LINK), None)
        if mac is not None:
            assert links[name][0] == mac, name
        theirs = {(a.address.split("%")[0], _prefix(a.netmask))
                  for a in entries if a.family in (socket.AF_INET, socket.AF_INET6) and a.netmask}
        assert mine.get(name, set()) == theirs, name
    for name, st in stats.items():
        assert links[name][1] == st.mtu and links[name][2] == st.isup, name
        assert sysinfo.link_speed(name) == st.speed, name


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2")
def test_a_labelled_address_and_a_device_without_mac():
    a, b, t = f"hls{uuid.uuid4().hex[:6]}", f"hlt{uuid.uuid4().hex[:6]}", f"hlu{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    subprocess.run(["ip", "tuntap", "add", "dev", t, "mode", "tun"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "100.101.102.103/10", "dev", a], check=True)
        subprocess.run(["ip", "addr", "add", "10.9.8.7/24", "dev", a, "label", f"{a}:1"], check=True)
        subprocess.run(["ip", "addr", "add", "10.9.9.1", "peer", "10.9.9.2", "dev", t], check=True)
        mine = {(n, ad, p) for n, ad, p in sysinfo.addresses()}
        assert {(a, "100.101.102.103", 10), (f"{a}:1", "10.9.8.7", 24), (t, "10.9.9.1", 32)} <= mine
        links = sysinfo.links()
        assert links[t][0] is None and links[a][0] is not None
        assert sysinfo.link_speed(b) == psutil.net_if_stats()[b].speed  # down: ethtool still answers
        addrs = psutil.net_if_addrs()
        assert [x.address for x in addrs[f"{a}:1"]] == ["10.9.8.7"]
        assert [x.address for x in addrs[t]] == ["10.9.9.1"]
    finally:
        subprocess.run(["ip", "link", "del", a], check=False)
        subprocess.run(["ip", "tuntap", "del", "dev", t, "mode", "tun"], check=False)


def test_temperatures_grouped_and_ordered_as_psutil_does(tmp_path):
    """No hwmon here to compare with: a tree laid out as the kernel does, and the result
    psutil's code gives for it (sorted paths, chips merged by name, device/ subdirectories)."""
    def sensor(d, n, milli, label=None):
        d.mkdir(parents=True, exist_ok=True)
        (d / f"temp{n}_input").write_text(f"{milli}\n")
        if label:
            (d / f"temp{n}_label").write_text(f"{label}\n")

    hw = tmp_path / "hwmon"
    for i, name in ((0, "coretemp"), (1, "nvme"), (2, "nvme")):
        (hw / f"hwmon{i}").mkdir(parents=True)
        (hw / f"hwmon{i}" / "name").write_text(f"{name}\n")
    sensor(hw / "hwmon0", 1, 45000, "Package id 0")
    sensor(hw / "hwmon0", 10, 47000, "Core 9")
    sensor(hw / "hwmon0", 2, 46000, "Core 0")
    sensor(hw / "hwmon1", 1, 38850)
    sensor(hw / "hwmon2", 1, 40000, "Composite")
    (hw / "hwmon2" / "temp2_input").write_text("garbage\n")  # skipped, as psutil skips it
    (hw / "hwmon3" / "device").mkdir(parents=True)  # CentOS's intermediate device/
    (hw / "hwmon3" / "device" / "name").write_text("acpitz\n")
    sensor(hw / "hwmon3" / "device", 1, 27800)
    assert sysinfo.temperatures(str(hw), str(tmp_path / "none")) == {
        "coretemp": [("Package id 0", 45.0), ("Core 9", 47.0), ("Core 0", 46.0)],
        "nvme": [("", 38.85), ("Composite", 40.0)],
        "acpitz": [("", 27.8)],
    }
    zones = tmp_path / "thermal"
    for i, (kind, milli) in enumerate((("x86_pkg_temp", 51000), ("acpitz", 27800))):
        (zones / f"thermal_zone{i}").mkdir(parents=True)
        (zones / f"thermal_zone{i}" / "type").write_text(f"{kind}\n")
        (zones / f"thermal_zone{i}" / "temp").write_text(f"{milli}\n")
    (zones / "cooling_device0").mkdir()
    assert sysinfo.temperatures(str(tmp_path / "none"), str(zones)) == {
        "x86_pkg_temp": [("", 51.0)], "acpitz": [("", 27.8)]}
