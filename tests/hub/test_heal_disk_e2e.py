"""The shipped disk rule heals a real full filesystem, end to end, with real processes.

A small ext4 image is loop-mounted under /tmp and filled with old junk; a real agent samples
it with its metrics collector; a real hub evaluates the shipped `disk-almost-full` rule (copied
under another name with `for: 5m` shortened to 2 s, so the test does not wait five minutes;
condition, hold, diagnostics and fix candidates are the shipped ones). `disk-report` runs by
itself and ends "diagnosed"; its evidence picks `clean-tmp` for the mount; a person approves
it (or a standing policy does, with no prompt); the files go; the next sample is below 90%
and the fix is "verified" because the rule's condition cleared, while the alert is still held
open by `keep_firing_for`. With the junk made immutable the same fix is reported "not
verified" with the reason; on a node whose allow-list forbids clean-tmp a policy's run fails,
refused by the node, and nothing is deleted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import join_agent, wait_for

ROOT = Path(__file__).resolve().parents[2]


def hub_cli(data_dir, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60)


def shipped_rule_for_test() -> str:
    text = (ROOT / "rules" / "disk.yaml").read_text()
    text = text.replace("disk-almost-full", "e2e-disk-almost-full").replace("disk-full-in-24h", "e2e-disk-full-in-24h")
    out, n = re.subn(r"(name: e2e-disk-almost-full\n(?:.*\n)*?    )for: 5m\n", r"\1for: 2s\n", text, count=1)
    assert n == 1
    return out


@pytest.fixture
def full_disk(tmp_path):
    if os.geteuid() != 0 or not str(tmp_path).startswith("/tmp/"):
        pytest.skip("needs root (loop mount) and a tmp_path under /tmp (clean-tmp's allowed set)")
    img, mnt = tmp_path / "disk.img", tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "8M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(img)], check=True)
    r = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"no loop device here: {r.stderr.strip()}")
    dev = r.stdout.strip()
    r = subprocess.run(["mount", dev, str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["losetup", "-d", dev])
        pytest.skip(f"cannot mount a loop device here: {r.stderr.strip()}")
    try:
        old = time.time() - 2 * 86400
        junk = mnt / "junk"
        junk.mkdir()
        st = os.statvfs(mnt)
        left = st.f_bavail * st.f_frsize
        for i in range(int(left * 0.95) // (256 * 1024)):
            f = junk / f"junk-{i}.bin"
            f.write_bytes(os.urandom(256 * 1024))
            os.utime(f, (old, old))
        (mnt / "fresh.txt").write_text("keep me")
        st = os.statvfs(mnt)
        assert 1 - st.f_bavail / st.f_blocks > 0.9
        yield mnt
    finally:
        subprocess.run(["chattr", "-R", "-i", str(mnt)], capture_output=True)
        for _ in range(20):  # the agent's last sample may still be reading it
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        else:
            subprocess.run(["umount", "-l", str(mnt)])
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def start(tmp_path, hub_process, agent_process, monkeypatch, before_agent=None, agent_env=None):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "disk.yaml").write_text(shipped_rule_for_test())
    for k in list(os.environ):
        if k.startswith("HOMELAB_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOMELAB_HUB_RULES_DIR", str(rules))
    monkeypatch.setenv("HOMELAB_MODEL", "none")
    monkeypatch.setenv("HOMELAB_HUB_VERIFY_WINDOW", "60")
    hub = hub_process().start()
    state = tmp_path / "agent"
    join_agent(hub.url, hub.enroll("n1"), state)
    if before_agent is not None:
        before_agent(hub)
    agent_process(state, "--collectors", "metrics", "--metrics-interval", "1",
                  env={"HOMELAB_AGENT_HEARTBEAT": "1", **(agent_env or {})})
    return hub


def diagnosed_then_fix(hub, mnt, approve=True) -> int:
    diag = wait_for(lambda: hub.query("SELECT id, state, output FROM proposals WHERE playbook = 'disk-report'"
                                      " AND params LIKE ? AND state NOT IN ('proposed', 'approved', 'dispatched',"
                                      " 'running', 'succeeded')", (f'%{mnt}%',)), 90,
                    what=f"disk-report diagnosed (hub log: {hub.log})")[0]
    assert diag[1] == "diagnosed", diag
    assert f"largest reclaimable: clean-tmp {mnt}" in diag[2]
    pid = wait_for(lambda: hub.query("SELECT id FROM proposals WHERE playbook = 'clean-tmp'"), 60,
                   what="the fix proposal")[0][0]
    p = json.loads(hub_cli(hub.data_dir, "proposals", "show", str(pid), "--json").stdout)
    assert (p["rule"], p["params"]) == ("e2e-disk-almost-full", {"path": str(mnt), "age": "86400"})
    assert any(isinstance(e, dict) and e.get("proposal") == diag[0] for e in p["evidence"])
    if approve:
        assert p["state"] == "proposed"
        r = hub_cli(hub.data_dir, "approve", str(pid), "--yes")
        assert r.returncode == 0, r.stderr
    wait_for(lambda: hub.query("SELECT state FROM proposals WHERE id = ?", (pid,))[0][0]
             in ("verified", "not verified", "failed"), 120, what="the fix to run and be judged")
    return pid


@pytest.mark.slow
def test_full_disk_diagnosed_fixed_and_verified_by_the_condition(tmp_path, full_disk, hub_process, agent_process,
                                                                  monkeypatch):
    hub = start(tmp_path, hub_process, agent_process, monkeypatch)
    pid = diagnosed_then_fix(hub, full_disk)
    state, reason, output = hub.query("SELECT state, reason, output FROM proposals WHERE id = ?", (pid,))[0]
    assert state == "verified", (state, reason, output)
    assert list((full_disk / "junk").iterdir()) == [] and (full_disk / "fresh.txt").exists()
    note = hub.query("SELECT note FROM proposal_transitions WHERE proposal_id = ? AND to_state = 'verified'", (pid,))
    assert note == [("the rule's condition cleared on data since the fix",)]
    # the alert itself is still held by keep_firing_for (5m): it did not decide the verdict
    assert hub.query("SELECT a.state FROM alerts a JOIN proposals p ON p.alert_id = a.id WHERE p.id = ?",
                     (pid,)) == [("firing",)]
    v = hub_cli(hub.data_dir, "audit", "verify")
    assert v.returncode == 0 and "intact" in v.stdout, v.stderr


@pytest.mark.slow
def test_a_fix_that_frees_nothing_is_reported_not_verified_with_the_reason(tmp_path, full_disk, hub_process,
                                                                          agent_process, monkeypatch):
    subprocess.run(["chattr", "-R", "+i", str(full_disk / "junk")], check=True)  # rm will fail
    hub = start(tmp_path, hub_process, agent_process, monkeypatch)
    pid = diagnosed_then_fix(hub, full_disk)
    state, reason = hub.query("SELECT state, reason FROM proposals WHERE id = ?", (pid,))[0]
    assert state == "not verified", (state, reason)
    assert reason.startswith("verify step failed")  # clean-tmp's own check: old files are left
    assert len(list((full_disk / "junk").iterdir())) > 10


def standing_policy(hub):
    r = hub_cli(hub.data_dir, "policy", "add", "clean-tmp", "--node", "n1", "--param", "path=~/tmp/.*",
                "--param", "age=3600..172800", "--rate", "2/1h", "--yes")
    assert r.returncode == 0, r.stderr
    assert "policy 1 approved by" in r.stdout


@pytest.mark.slow
def test_under_a_standing_policy_the_fix_runs_with_no_prompt_and_is_verified(tmp_path, full_disk, hub_process,
                                                                             agent_process, monkeypatch):
    hub = start(tmp_path, hub_process, agent_process, monkeypatch, before_agent=standing_policy)
    pid = diagnosed_then_fix(hub, full_disk, approve=False)  # nobody runs `approve`
    state, reason, approved_by = hub.query("SELECT state, reason, approved_by FROM proposals WHERE id = ?", (pid,))[0]
    assert (state, approved_by) == ("verified", "policy:1"), reason
    assert list((full_disk / "junk").iterdir()) == []
    assert hub.query("SELECT actor FROM audit WHERE proposal_id = ? AND action = 'approved'", (pid,)) == [("policy:1",)]
    listed = json.loads(hub_cli(hub.data_dir, "policy", "list", "--json").stdout.splitlines()[0])
    assert listed["state"] == "active" and [r["outcome"] for r in listed["runs"]] == ["verified"]
    v = hub_cli(hub.data_dir, "audit", "verify")
    assert v.returncode == 0 and "intact" in v.stdout, v.stderr


@pytest.mark.slow
def test_a_policy_cannot_run_what_the_nodes_own_locks_forbid(tmp_path, full_disk, hub_process, agent_process,
                                                             monkeypatch):
    # this node lets the hub run its diagnostics and nothing else
    hub = start(tmp_path, hub_process, agent_process, monkeypatch, before_agent=standing_policy,
                agent_env={"HOMELAB_AGENT_ALLOW_PLAYBOOKS": "disk-report"})
    pid = diagnosed_then_fix(hub, full_disk, approve=False)
    state, reason, approved_by = hub.query("SELECT state, reason, approved_by FROM proposals WHERE id = ?", (pid,))[0]
    assert (state, approved_by) == ("failed", "policy:1")
    assert reason == "refused by the node: playbook 'clean-tmp' is not in this node's allow_playbooks"
    assert len(list((full_disk / "junk").iterdir())) > 10  # nothing ran
    listed = json.loads(hub_cli(hub.data_dir, "policy", "list", "--json").stdout.splitlines()[0])
    assert (listed["failures"], [r["outcome"] for r in listed["runs"]]) == (1, ["failed"])
