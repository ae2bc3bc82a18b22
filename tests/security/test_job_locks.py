"""Finding 2: check and verify jobs obey the node's locks, and a dry run's output is bounded and
never carries a file the file collector would keep back."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from seclib import Node, root


def write_params(target, content: bytes, mode="0600") -> dict:
    return {"path": str(target), "content": base64.b64encode(content).decode(),
            "sha256": hashlib.sha256(content).hexdigest(), "mode": mode, "owner": "root" if os.geteuid() == 0
            else __import__("pwd").getpwuid(os.geteuid()).pw_name}


@pytest.fixture
def secret(tmp_path):
    f = tmp_path / "secret.conf"
    f.write_text("db_password=HUNTER2-never-leaves\n")
    f.chmod(0o600)
    return f


@pytest.mark.parametrize("mode", ["check", "verify", "run"])
async def test_every_mode_obeys_max_risk(tmp_path, secret, mode):
    n = Node(tmp_path, max_risk="read-only")
    n.install_shipped("write-file")  # risk: change
    res = await n.runner.handle(n.job("write-file", write_params(secret, b"new\n"), mode=mode))
    assert res.status == "refused", res
    assert "this node runs at most read-only" in res.reason
    assert secret.read_text().startswith("db_password=HUNTER2")


@pytest.mark.parametrize("mode", ["check", "verify"])
async def test_every_mode_obeys_allow_playbooks(tmp_path, secret, mode):
    n = Node(tmp_path, allow_playbooks=["clean-tmp"])
    n.install_shipped("write-file")
    res = await n.runner.handle(n.job("write-file", write_params(secret, b"new\n"), mode=mode))
    assert res.status == "refused" and "allow_playbooks" in res.reason, res


async def test_check_of_a_private_file_does_not_print_it(tmp_path, secret):
    n = Node(tmp_path, max_risk="change")
    n.install_shipped("write-file")
    res = await n.runner.handle(n.job("write-file", write_params(secret, b"replaced\n"), mode="check"))
    assert res.status == "succeeded", res
    assert "would write" in res.output and "content not shown" in res.output
    assert "HUNTER2" not in res.output and "replaced" not in res.output
    # a world-readable file and mode still get their diff (the file collector sends those too)
    pub = tmp_path / "motd"
    pub.write_text("old line\n")
    pub.chmod(0o644)
    res = await n.runner.handle(n.job("write-file", write_params(pub, b"new line\n", mode="0644"), mode="check"))
    assert "-old line" in res.output and "+new line" in res.output


async def test_dry_run_output_is_bounded(tmp_path):
    n = Node(tmp_path, max_risk="change")
    book = n.books / "noisy.sh"
    book.write_text("#!/usr/bin/env bash\n# ---\n# name: noisy\n# description: Prints a lot in its check.\n"
                    "# risk: read-only\n# timeout: 30\n"
                    "# check: head -c 100000 /dev/zero | tr '\\\\0' x; echo END\n# ---\necho run\n")
    res = await n.runner.handle(n.job("noisy", {}, mode="check"))
    assert res.status == "succeeded", res
    assert len(res.output.encode()) <= 8 * 1024 and res.output.rstrip().endswith("END")


async def test_hub_queues_no_check_for_a_fix_nobody_approved(hub, monkeypatch):
    """A rule-made fix (restart-unit, risk change) waits for a person; the hub sends the node
    nothing for it, not even its dry run."""
    import hub.brain as brain_mod
    from hub.keys import ALERT_LISTENERS

    def no_model(*a, **kw):
        raise RuntimeError("no model here")

    monkeypatch.setattr(brain_mod, "decide", no_model)
    hub.enroll("n1")
    alert = {"id": 7, "node": "n1", "rule": object(), "rule_name": "unit-failed", "transition": "firing",
             "annotations": {"summary": "nginx failed"}, "events": [],
             "propose": [{"playbook": "restart-unit", "params": {"unit": "nginx"}}]}
    listener = next(fn for fn in hub.app[ALERT_LISTENERS] if fn.__module__ == "hub.proposals.web")
    await hub.writer.run(lambda db: listener(db, alert))
    await root.async_wait_for(lambda: hub.query("SELECT state FROM proposals") == [("proposed",)], 20,
                              what="the proposal")
    await root.async_wait_for(lambda: hub.query("SELECT done FROM proposal_requests")[0][0], 20, what="request done")
    assert hub.query("SELECT count(*) FROM jobs") == [(0,)]
