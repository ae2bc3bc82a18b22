"""The node's job runner: every check that stands between a job and bash, each made to fail.
Real scripts run (in tmp_path); keys are real Ed25519 keys."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import wire
from agent.jobs import JobRunner
from agent.settings import Settings
from agent.state import State

SCRIPT = """#!/usr/bin/env bash
# ---
# name: mark
# description: Append a line to a marker file (test playbook).
# risk: {risk}
# timeout: {timeout}
# params:
#   target: {{type: path, required: true}}
#   word: {{type: string, default: hello}}
# check: echo "would mark $PARAM_TARGET"
# ---
set -euo pipefail
{body}
"""
BODY = 'echo "$PARAM_WORD" >> "$PARAM_TARGET"; echo "marked $PARAM_TARGET"'


class Node:
    def __init__(self, tmp_path: Path, **overrides):
        self.tmp = tmp_path
        self.books = tmp_path / "playbooks"
        self.books.mkdir(exist_ok=True)
        self.state_dir = tmp_path / "state"
        self.state_dir.mkdir(exist_ok=True)
        self.key = Ed25519PrivateKey.generate()
        pub = self.key.public_key().public_bytes_raw()
        (self.state_dir / "hub.pub").write_text(base64.b64encode(pub).decode() + "\n")
        values = {"state_dir": self.state_dir, "node": "n1", "hub_url": "http://127.0.0.1:9",
                  "exec": True, "allow_playbooks": [], "max_risk": "change", "playbooks_dir": self.books}
        values.update(overrides)
        self.settings = Settings(values, {k: "test" for k in values})
        self.state = State(self.state_dir / "state.db")
        self.reports: list[wire.JobResult] = []
        self.runner = JobRunner(self.settings, self.state, self.reports.append, "cred")
        self.marker = tmp_path / "marker"

    def install(self, risk="change", timeout=10, body=BODY, name="mark") -> Path:
        p = self.books / f"{name}.sh"
        p.write_text(SCRIPT.format(risk=risk, timeout=timeout, body=body).replace("name: mark", f"name: {name}"))
        return p

    def job(self, *, key=None, name="mark", **fields) -> dict:
        path = self.books / f"{name}.sh"
        now = time.time()
        job = {"v": 1, "id": "job_" + os.urandom(6).hex(), "node": "n1", "proposal": 1, "mode": "run",
               "playbook": name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "risk": "change",
               "params": {"target": str(self.marker)}, "issued": now, "expires": now + 600}
        job.update(fields)
        payload = json.dumps(job, sort_keys=True, separators=(",", ":"))
        sig = (key or self.key).sign(payload.encode())
        return {"payload": payload, "signature": base64.b64encode(sig).decode()}

    def final(self) -> wire.JobResult:
        return self.reports[-1]


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path)
    n.install()
    yield n
    n.state.close()


async def test_a_valid_job_runs_with_params_as_env_and_reports(node):
    res = await node.runner.handle(node.job(params={"target": str(node.marker), "word": "abc"}))
    assert res.status == "succeeded" and res.exit_code == 0, res
    assert node.marker.read_text() == "abc\n"
    assert f"marked {node.marker}" in res.output
    assert [r.status for r in node.reports] == ["running", "succeeded"]
    assert res.duration_ms is not None and res.job_id.startswith("job_")


def refused(node, needle):
    r = node.final()
    assert r.status == "refused", r
    assert needle in (r.reason or ""), r.reason
    assert not node.marker.exists(), "the script ran"


@pytest.mark.parametrize("params,needle", [
    ({"target": "/tmp/x; rm -rf /"}, "only letters"),
    ({"target": "/tmp/$(id)"}, "only letters"),
    ({"target": "/tmp/`id`"}, "only letters"),
    ({"target": "../../etc/passwd"}, "not an absolute path"),
    ({"target": "/tmp/a\n/etc/passwd"}, "newline"),
    ({"target": "/tmp/" + "a" * 5000}, "the limit is"),
    ({"target": "/tmp/x", "extra": "1"}, "unknown parameter"),
    ({}, "required"),
])
async def test_hostile_parameters_are_refused_by_the_local_header(node, params, needle):
    await node.runner.handle(node.job(params=params))
    refused(node, needle)


async def test_playbook_modified_on_node_after_approval_is_refused(node):
    job = node.job()
    node.install(body=BODY + "\necho extra")
    await node.runner.handle(job)
    refused(node, "SHA-256")


async def test_replayed_job_runs_once(node):
    job = node.job()
    assert (await node.runner.handle(job)).status == "succeeded"
    await node.runner.handle(job)
    assert node.final().status == "refused" and "replayed" in node.final().reason
    assert node.marker.read_text() == "hello\n"
    # remembered across restarts of the agent (the id lives in state.db)
    node.state.close()
    node.state = State(node.state_dir / "state.db")
    again = JobRunner(node.settings, node.state, node.reports.append, "cred")
    await again.handle(job)
    assert node.final().status == "refused" and "replayed" in node.final().reason
    assert node.marker.read_text() == "hello\n"


async def test_expired_approval_is_refused(node):
    await node.runner.handle(node.job(issued=time.time() - 7200, expires=time.time() - 3600))
    refused(node, "expired")


async def test_job_for_another_node_is_refused(node):
    await node.runner.handle(node.job(node="n2"))
    refused(node, "for node 'n2'")


async def test_forged_signature_is_refused(node):
    await node.runner.handle(node.job(key=Ed25519PrivateKey.generate()))
    refused(node, "bad signature")


async def test_tampered_payload_is_refused(node):
    env = node.job()
    job = json.loads(env["payload"])
    job["params"]["word"] = "tampered"
    env["payload"] = json.dumps(job, sort_keys=True, separators=(",", ":"))
    await node.runner.handle(env)
    refused(node, "bad signature")


async def test_no_pinned_key_refuses_everything(node):
    (node.state_dir / "hub.pub").unlink()
    runner = JobRunner(node.settings, node.state, node.reports.append, "cred")
    await runner.handle(node.job())
    refused(node, "no pinned hub key")


@pytest.mark.parametrize("mode", ["run", "check", "verify"])
async def test_exec_false_nothing_runs_whatever_the_hub_sends(tmp_path, mode):
    n = Node(tmp_path, exec=False)
    n.install(body=f'touch "{tmp_path}/ran"; ' + BODY)
    await n.runner.handle(n.job(mode=mode))
    refused(n, "exec = false")
    assert not (tmp_path / "ran").exists()
    n.state.close()


async def test_allowlist_and_max_risk_are_local_locks(tmp_path):
    n = Node(tmp_path, allow_playbooks=["other"])
    n.install()
    await n.runner.handle(n.job())
    refused(n, "allow_playbooks")
    n.state.close()
    (tmp_path / "m").mkdir()
    m = Node(tmp_path / "m", max_risk="read-only")
    m.install(risk="change")
    # the job claims read-only; the node goes by its own header
    await m.runner.handle(m.job(risk="read-only"))
    refused(m, "this node runs at most read-only")
    # the dry run obeys the lock too: it is still the playbook's code reading the node
    await m.runner.handle(m.job(mode="check"))
    refused(m, "this node runs at most read-only")
    m.state.close()


async def test_timeout_kills_the_whole_process_group(node):
    pids = node.tmp / "pids"
    node.install(timeout=1, body=f'sleep 60 & echo $! > "{pids}"; echo $$ >> "{pids}"; sleep 60')
    t0 = time.monotonic()
    res = await node.runner.handle(node.job())
    assert res.status == "timeout" and "timeout of 1s" in res.reason
    assert time.monotonic() - t0 < 10
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"process {pid} survived the timeout")


async def test_output_is_bounded_env_minimal_stdin_closed(node, monkeypatch):
    monkeypatch.setenv("HOMELAB_SECRET_FOR_TEST", "s3cret")
    node.install(body='head -c 200000 /dev/zero | tr "\\0" x; echo; env; if read -r _; then echo STDIN-OPEN; else echo STDIN-EOF; fi; echo END')
    res = await node.runner.handle(node.job())
    assert res.status == "succeeded"
    assert len(res.output.encode()) <= 64 * 1024
    assert res.output.rstrip().endswith("END") and "STDIN-EOF" in res.output
    assert "s3cret" not in res.output and "PARAM_TARGET=" in res.output
    assert "PLAYBOOK_MODE=run" in res.output


async def test_without_systemd_the_output_says_the_playbook_ran_as_a_direct_child(node, monkeypatch):
    from agent import jobs

    # where systemd is PID 1 the run is a transient unit (tests/lab); here it cannot be
    monkeypatch.setattr(jobs, "systemd_booted", lambda: False)
    node.install(body="echo ran")
    res = await node.runner.handle(node.job())
    assert res.status == "succeeded"
    first, rest = res.output.split("\n", 1)
    assert "systemd is not PID 1 here" in first and "direct child" in first
    assert rest == "ran\n"


async def test_failed_script_reports_exit_code(node):
    node.install(body="echo boom >&2; exit 7")
    res = await node.runner.handle(node.job())
    assert (res.status, res.exit_code) == ("failed", 7) and "boom" in res.output


async def test_missing_playbook_and_bad_names(node):
    await node.runner.handle(node.job(playbook="../mark"))
    refused(node, "is not a playbook name")
    env = node.job()
    job = json.loads(env["payload"])
    job["playbook"] = "absent"
    payload = json.dumps(job, sort_keys=True, separators=(",", ":"))
    await node.runner.handle({"payload": payload, "signature": base64.b64encode(node.key.sign(payload.encode())).decode()})
    refused(node, "not installed")
    await node.runner.handle({"payload": "{}", "signature": "!!"})
    assert node.final().status == "refused"
    await node.runner.handle(node.job(id="../../escape"))
    refused(node, "job id")
    await node.runner.handle("garbage")
    assert node.final().reason == "malformed job envelope"
