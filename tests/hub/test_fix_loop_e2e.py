"""The whole loop with real processes: a rule fires on a real condition on a real agent, a
proposal appears, `homelab-hub approve ID --yes` approves it, the agent runs the playbook,
the hub records success, runs the verify step and sees the alert resolve: verified.

The condition: old junk files appear in a temporary directory the agent watches (real
inotify). A test rule (in a rules_dir) fires on three such creations within 5 s and proposes
the shipped `clean-tmp` playbook for that directory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import sqlite3
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.paths import shipped
from tests.conftest import join_agent, wait_for

RULE = """
rules:
  - name: e2e-junk
    description: Old junk files appeared in the end-to-end test directory.
    severity: warning
    event:
      kind: file
      where: {action: [create]}
      extract:
        path: '^(?P<dir>/tmp/.+/junk)/'
    aggregate: {fn: count, window: 5s}
    when: {value: {gte: 3}}
    group_by: [node, dir]
    annotations:
      summary: "{{ value | int }} junk files under {{ dir }}"
    propose:
      - playbook: clean-tmp
        params: {path: "{{ dir }}", age: 1h}
"""


def hub_cli(data_dir, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_alert_proposal_approval_run_verify(tmp_path, hub_process, agent_process, monkeypatch):
    if not str(tmp_path).startswith("/tmp/"):
        pytest.skip("clean-tmp only works below /tmp; pytest's tmp_path is elsewhere")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "e2e.yaml").write_text(RULE)
    junk = tmp_path / "junk"
    junk.mkdir()
    for k in list(os.environ):
        if k.startswith("HOMELAB_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOMELAB_HUB_RULES_DIR", str(rules))
    monkeypatch.setenv("HOMELAB_MODEL", "none")  # the rule's choice stands; no model in this test
    monkeypatch.setenv("HOMELAB_HUB_VERIFY_WINDOW", "60")
    hub = hub_process().start()
    state = tmp_path / "agent"
    join_agent(hub.url, hub.enroll("n1"), state)
    agent_process(state, "--collectors", "files", "--watch", str(junk), env={"HOMELAB_AGENT_HEARTBEAT": "1"})
    wait_for(lambda: hub.query("SELECT last_seen FROM nodes WHERE name = 'n1'")[0][0], 30, what="agent online")
    time.sleep(1.0)  # let the files collector set up its watches

    # the real condition: junk that is two days old lands in the watched directory
    old = time.time() - 2 * 86400
    for i in range(4):
        f = junk / f"junk-{i}.bin"
        f.write_bytes(b"x" * 1000)
        os.utime(f, (old, old))
    (junk / "fresh.txt").write_text("keep me")

    pid = wait_for(lambda: hub.query("SELECT id FROM proposals WHERE playbook = 'clean-tmp'"), 60,
                   what=f"a proposal (hub log: {hub.log})")[0][0]
    p = json.loads(hub_cli(hub.data_dir, "proposals", "show", str(pid), "--json").stdout)
    assert (p["state"], p["node"], p["rule"]) == ("proposed", "n1", "e2e-junk")
    assert p["params"] == {"path": str(junk), "age": "3600"}
    # clean-tmp changes things: not even its dry run runs on the node before a person approves
    assert hub.query("SELECT count(*) FROM jobs WHERE proposal_id = ?", (pid,)) == [(0,)]
    shown = hub_cli(hub.data_dir, "proposals", "show", str(pid))
    assert shown.returncode == 0 and "not run before approval" in shown.stdout
    assert sorted(x.name for x in junk.iterdir()) == ["fresh.txt"] + [f"junk-{i}.bin" for i in range(4)]

    r = hub_cli(hub.data_dir, "approve", str(pid), "--yes")
    assert r.returncode == 0, r.stderr
    assert "approved by" in r.stdout

    wait_for(lambda: hub.query("SELECT state FROM proposals WHERE id = ?", (pid,))[0][0]
             in ("verified", "not verified", "failed"), 90, what="the fix to run and be verified")
    state_, reason, output = hub.query("SELECT state, reason, output FROM proposals WHERE id = ?", (pid,))[0]
    assert state_ == "verified", (state_, reason, output)
    assert sorted(x.name for x in junk.iterdir()) == ["fresh.txt"]
    assert "deleted 4 file(s)" in output
    alert_state = hub.query("SELECT a.state FROM alerts a JOIN proposals p ON p.alert_id = a.id WHERE p.id = ?", (pid,))
    assert alert_state == [("resolved",)]
    steps = [s for (s,) in hub.query("SELECT to_state FROM proposal_transitions WHERE proposal_id = ? ORDER BY id", (pid,))]
    assert steps == ["proposed", "approved", "dispatched", "running", "succeeded", "verified"]
    approver = hub.query("SELECT approved_by FROM proposals WHERE id = ?", (pid,))[0][0]
    assert approver.startswith(pwd.getpwuid(os.getuid()).pw_name)
    v = hub_cli(hub.data_dir, "audit", "verify")
    assert v.returncode == 0 and "intact" in v.stdout, v.stderr
    listed = hub_cli(hub.data_dir, "proposals", "--state", "verified", "--json")
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [pid]


@pytest.mark.slow
def test_no_exec_agent_runs_nothing_whatever_the_hub_sends(tmp_path, hub_process, agent_process, monkeypatch):
    """`--no-exec` on a real agent: the approved fix and a forged job planted in
    the hub's jobs table are all refused, and say why; the files stay."""
    if not str(tmp_path).startswith("/tmp/"):
        pytest.skip("clean-tmp only works below /tmp; pytest's tmp_path is elsewhere")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "e2e.yaml").write_text(RULE)
    junk = tmp_path / "junk"
    junk.mkdir()
    for k in list(os.environ):
        if k.startswith("HOMELAB_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOMELAB_HUB_RULES_DIR", str(rules))
    monkeypatch.setenv("HOMELAB_MODEL", "none")
    hub = hub_process().start()
    state = tmp_path / "agent"
    join_agent(hub.url, hub.enroll("n1"), state)
    agent_process(state, "--no-exec", "--collectors", "files", "--watch", str(junk), env={"HOMELAB_AGENT_HEARTBEAT": "1"})
    wait_for(lambda: hub.query("SELECT last_seen FROM nodes WHERE name = 'n1'")[0][0], 30, what="agent online")
    time.sleep(1.0)
    old = time.time() - 2 * 86400
    for i in range(4):
        f = junk / f"junk-{i}.bin"
        f.write_bytes(b"x")
        os.utime(f, (old, old))
    pid = wait_for(lambda: hub.query("SELECT id FROM proposals WHERE playbook = 'clean-tmp'"), 60, what="a proposal")[0][0]
    assert hub_cli(hub.data_dir, "approve", str(pid), "--yes").returncode == 0
    wait_for(lambda: hub.query("SELECT state FROM proposals WHERE id = ?", (pid,))[0][0] == "failed", 60, what="refusal")
    assert "exec = false" in hub.query("SELECT reason FROM proposals WHERE id = ?", (pid,))[0][0]

    # a job planted straight into the hub's table, signed by someone else's key
    sha = hashlib.sha256((shipped("playbooks") / "clean-tmp.sh").read_bytes()).hexdigest()
    now = time.time()
    job = {"v": 1, "id": "job_forged", "node": "n1", "proposal": None, "mode": "run", "playbook": "clean-tmp",
           "sha256": sha, "risk": "change", "params": {"path": str(junk), "age": "3600"}, "issued": now, "expires": now + 600}
    payload = json.dumps(job, sort_keys=True, separators=(",", ":"))
    sig = base64.b64encode(Ed25519PrivateKey.generate().sign(payload.encode())).decode()
    db = sqlite3.connect(hub.data_dir / "homelab.db", timeout=10)
    with db:
        db.execute("INSERT INTO jobs (id, node, mode, playbook, payload, signature, created, expires, state)"
                   " VALUES ('job_forged', 'n1', 'run', 'clean-tmp', ?, ?, ?, ?, 'queued')", (payload, sig, now, now + 600))
    db.close()
    wait_for(lambda: hub.query("SELECT state FROM jobs WHERE id = 'job_forged'") == [("refused",)], 60, what="forged job refused")
    assert "bad signature" in hub.query("SELECT reason FROM jobs WHERE id = 'job_forged'")[0][0]
    assert len(list(junk.iterdir())) == 4
