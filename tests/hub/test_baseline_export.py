"""A configuration baseline end to end: a real agent inventories its watched files at first
start; `ansible export` recreates them; the export is applied with a real
`ansible-playbook --connection=local` to a fresh node (the same path, emptied); a fresh agent
re-enrolled as the node inventories it again; `ansible drift` finds nothing."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from test_ansible import ANSIBLE, hub_cli, run_playbook

from tests.conftest import Proc, async_wait_for, join_agent

pytestmark = pytest.mark.skipif(not ANSIBLE.exists(), reason="ansible-core is not installed (test extra)")

FILES = {  # relative path: (content, mode)
    "app/app.conf": ("listen = 8080\nworkers = 4\n", 0o644),
    "app/hooks/reload.sh": ("#!/bin/sh\nkill -HUP 1\n", 0o755),
    "motd": ("", 0o644),
    "hosts": ("127.0.0.1 localhost\n10.0.0.2 nas\n", 0o644),
    "app/conf.d/10-tls.conf": ("tls = on\n", 0o600),  # secret: not world-readable
}


def agent(tmp_path: Path, state: Path, root: Path, n: int) -> Proc:
    return Proc([sys.executable, "-m", "agent", "run", "--state-dir", str(state), "--collectors", "files",
                 "--watch", str(root)], tmp_path / f"agent-{n}.log")


async def test_export_applied_to_a_fresh_node_has_no_drift(hub, tmp_path):
    root = tmp_path / "node" / "etc"
    for rel, (text, mode) in FILES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        os.chmod(p, mode)
    (root / "app" / "app.conf.tmp").write_text("half-written\n")  # scratch stays out
    (root / "hosts~").write_text("editor backup\n")
    state = tmp_path / "agent1"
    await asyncio.to_thread(join_agent, hub.url, hub.enroll("n1"), state)
    a = agent(tmp_path, state, root, 1)
    try:
        await async_wait_for(lambda: len(hub.query("SELECT 1 FROM files WHERE node = 'n1'")) == 5, 60,
                             what="the first-start inventory on the hub")
    finally:
        await asyncio.to_thread(a.terminate)
    assert not hub.query("SELECT 1 FROM file_changes WHERE node = 'n1'")  # an inventory, not changes

    out = tmp_path / "export"
    r = await asyncio.to_thread(hub_cli, hub.data_dir, "ansible", "export", "n1", "-o", str(out))
    assert "4 files; 1 files are manual steps" in r.stdout, r.stdout
    hv = yaml.safe_load((out / "host_vars/n1.yml").read_text())
    assert {Path(f["dest"]).relative_to(root).as_posix(): f["mode"] for f in hv["homelab_files"]} == {
        "app/app.conf": "0644", "app/hooks/reload.sh": "0755", "motd": "0644", "hosts": "0644"}
    assert "10-tls.conf" in (out / "README.md").read_text()  # the secret one: a manual step
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("hosts~"))

    # a fresh node: the same path, empty; the export applied as its README says
    shutil.move(root, tmp_path / "node" / "etc.old")
    root.mkdir()
    run = await asyncio.to_thread(run_playbook, out, tmp_path)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "failed=0" in run.stdout
    old = tmp_path / "node" / "etc.old" / "app/conf.d/10-tls.conf"
    manual = root / "app/conf.d/10-tls.conf"  # the manual step: copied by hand
    manual.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(old, manual)
    for rel, (text, mode) in FILES.items():
        assert (root / rel).read_text() == text and (root / rel).stat().st_mode & 0o777 == mode, rel

    # the fresh node's agent (a new install, enrolled again under the same name)
    state2 = tmp_path / "agent2"
    await asyncio.to_thread(join_agent, hub.url, hub.enroll("n1"), state2)
    (before,) = hub.query("SELECT max(seq) FROM file_baseline WHERE node = 'n1'")[0]
    b = agent(tmp_path, state2, root, 2)
    try:
        await async_wait_for(lambda: hub.query(
            "SELECT count(*) FROM file_baseline WHERE node = 'n1' AND seq > ?", (before,))[0][0] == 5,
            60, what="the fresh node's inventory")
    finally:
        await asyncio.to_thread(b.terminate)
    d = await asyncio.to_thread(hub_cli, hub.data_dir, "ansible", "drift", "n1", "--exit-code")
    assert "n1: no drift since the export of" in d.stdout, d.stdout
    # and drift does see a difference on the fresh node
    (root / "hosts").write_text("127.0.0.1 localhost\n")
    c = agent(tmp_path, state2, root, 3)
    try:
        await async_wait_for(lambda: hub.query("SELECT 1 FROM file_changes WHERE node = 'n1' AND path LIKE '%/hosts'"),
                             60, what="the change reported")
    finally:
        await asyncio.to_thread(c.terminate)
    d = await asyncio.to_thread(hub_cli, hub.data_dir, "ansible", "drift", "n1", "--exit-code", ok=False)
    assert d.returncode == 1 and f"  ~ {root / 'hosts'}: content changed" in d.stdout, d.stdout
