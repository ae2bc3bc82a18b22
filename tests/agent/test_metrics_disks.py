"""Which filesystems the metrics collector reports, on a real mount table: a private mount
namespace (unshare) holding what a container's agent sees, a size-limited tmpfs, a second
mount of it, a bind mount of one file."""

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
def test_a_size_limited_tmpfs_is_reported_once_and_a_single_file_bind_never(tmp_path):
    d = tmp_path
    for sub in ("scratch", "again"):
        (d / sub).mkdir()
    (d / "file").write_text("")
    script = f"""set -e
mount --make-rprivate /
mount -t tmpfs -o size=8M tmpfs {d}/scratch
head -c 7700000 /dev/zero > {d}/scratch/fill
mount --bind {d}/scratch {d}/again
mount --bind /etc/hostname {d}/file
exec {sys.executable} -c '{SEE % {"d": d}}'
"""
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    mounts = [m for m, _, _ in seen["filesystems"]]
    assert [f for f in seen["filesystems"] if f[0] == f"{d}/scratch"] == [[f"{d}/scratch", "tmpfs", "tmpfs"]]
    assert f"{d}/again" not in mounts and f"{d}/file" not in mounts, mounts
    assert not [m for m in mounts if m.startswith(("/proc", "/sys/", "/run/"))], mounts
    assert seen["samples"][f'disk_used_ratio{{mount="{d}/scratch"}}'] >= 0.9
    assert len(mounts) == len(set(mounts))
