"""Which filesystems the metrics collector reports, on a real mount table in a private mount
namespace (unshare): a size-limited tmpfs /var/tmp, a second mount of it, a bind mount of one
file (as nspawn gives a container its host's os-release), a container engine's tmpfs and
overlay."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SEE = """
import json
from agent.collectors.metrics import MetricsCollector, filesystems
from agent.config import AGENT_OPTS
from agent.settings import load
col = MetricsCollector(load(AGENT_OPTS, {"state_dir": "%(d)s"}, None, env={}), lambda e: True, None)
print(json.dumps({"filesystems": [f[:3] for f in filesystems()], "samples": col.sample()}))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_a_size_limited_tmp_is_reported_once_and_container_plumbing_never(tmp_path):
    d = tmp_path
    for sub in ("again", "engine-shm", "lower", "upper", "work", "merged"):
        (d / sub).mkdir()
    (d / "file").write_text("")
    # in a mount namespace of its own: nothing here is seen outside the test
    script = f"""set -e
mount --make-rprivate /
mount -t tmpfs -o size=8M tmpfs /var/tmp
head -c 7700000 /dev/zero > /var/tmp/fill
mount --bind /var/tmp {d}/again
mount --bind /etc/hostname {d}/file
mount -t tmpfs -o size=1M tmpfs {d}/engine-shm
mount -t overlay overlay -o lowerdir={d}/lower,upperdir={d}/upper,workdir={d}/work {d}/merged
exec {sys.executable} -c '{SEE % {"d": d}}'
"""
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    mounts = [m for m, _, _ in seen["filesystems"]]
    assert ["/var/tmp", "tmpfs", "tmpfs"] in seen["filesystems"]
    assert seen["samples"]['disk_used_ratio{mount="/var/tmp"}'] >= 0.9
    # its bind mount, a one-file bind, a container's shm and overlay: none of them
    assert not [m for m in mounts if m.startswith(str(d))], mounts
    assert not [m for m in mounts if m.startswith(("/proc", "/sys/", "/run/"))], mounts
    assert len(mounts) == len(set(mounts))


def test_network_filesystems_are_never_touched(monkeypatch, tmp_path):
    """An NFS or CIFS mount is the NAS's disk (it reports its own), and a stat of a hung one
    blocks the agent's event loop: filesystems() must leave it out without looking at it."""
    from agent import sysinfo
    from agent.collectors import metrics

    local = tmp_path / "local"
    local.mkdir()
    mounts = [("/dev/sda1", str(local), "ext4", "rw")] + [
        (f"nas:/{fs}", f"/mnt/{fs}", fs, "rw") for fs in ("nfs", "nfs4", "cifs", "fuse.sshfs")]
    monkeypatch.setattr(sysinfo, "mounts", lambda: mounts)
    real_stat, real_statvfs = os.stat, os.statvfs

    def stat(path, *a, **k):
        assert not str(path).startswith("/mnt/"), f"stat of the network mount {path}"
        return real_stat(path, *a, **k)

    def statvfs(path):
        assert not str(path).startswith("/mnt/"), f"statvfs of the network mount {path}"
        return real_statvfs(path)

    monkeypatch.setattr(metrics.os, "stat", stat)
    monkeypatch.setattr(sysinfo.os, "statvfs", statvfs)
    assert [f[0] for f in metrics.filesystems()] == [str(local)]
    # the twin still lists them, from the mount table alone, with no size
    from agent.collectors import inventory

    monkeypatch.setattr(inventory, "filesystems", metrics.filesystems)
    listed = {m["mountpoint"]: m for m in inventory.mounts()}
    assert set(listed) == {str(local), "/mnt/nfs", "/mnt/nfs4", "/mnt/cifs", "/mnt/fuse.sshfs"}
    assert listed["/mnt/nfs4"]["total_bytes"] is None and listed["/mnt/nfs4"]["device"] == "nas:/nfs4"
