"""The hub's own unit under a real systemd: installed in a booted node as docs/onboarding.md
says, then a second node enrolls against it with the one-liner (tests/lab/hubnode.py)."""

from __future__ import annotations

import json
import sys

import hubnode
import nodelab
from test_heal import fail_flaky

EXPOSURE_MAX = 2.0  # measured live (docs/lab.md); a new exposure should be a choice


def count_events(hub: nodelab.Node, node: str) -> int:
    return hubnode.query(hub, f"SELECT count(*) FROM events WHERE node = '{node}'")[0][0]


def proposal_state(hub: nodelab.Node, pid: int) -> str:
    return hubnode.query(hub, f"SELECT state FROM proposals WHERE id = {pid}")[0][0]


def test_hub_installed_as_documented_runs_under_its_unit(lab, tmp_path):
    before = set(lab.nodes)
    try:
        hub = lab.node(f"hubsvc-{lab.made + 1}")
        hubnode.install(hub, tmp_path)
        with hubnode.journal_on_failure(hub):
            run_scenario(lab, hub)
    finally:  # its two nodes go now, not at the end of the session with the lab
        for name in set(lab.nodes) - before:
            lab.nodes.pop(name).stop()


def run_scenario(lab, hub: nodelab.Node) -> None:
    assert hub.sh("systemctl is-enabled homelab-hub").stdout.strip() == "enabled"
    assert hub.sh("systemctl is-active homelab-hub").stdout.strip() == "active"
    # it answers on its port from another machine (here: the host, on the lab's bridge)
    assert hubnode.http_status(hub, "/") in (200, 302, 303, 401), hubnode.http_status(hub, "/")

    # private data: the directory 0700, the database 0600, owned by the unit's user
    modes = hub.sh(f"stat -c '%a %U' {hubnode.DATA} {hubnode.DATA}/homelab.db").stdout.split()
    assert modes == ["700", "homelab", "600", "homelab"], modes

    # without the [ai] extra and without a model: the hub runs, and says the brain is off
    status = json.loads(hubnode.cli(hub, "status --json").stdout)
    assert status["hub"]["running"] and status["brain"]["state"] == "off (no model)", status
    assert "llama" not in hub.sh("/opt/homelab/bin/pip list 2>/dev/null").stdout

    score, table = hubnode.exposure(hub)
    sys.stderr.write(f"\nsystemd-analyze security homelab-hub.service (live): {score}\n{table}\n")
    assert score <= EXPOSURE_MAX, table

    # a second node enrolls with the one-liner this hub prints, and its events arrive
    line = next(ln for ln in hubnode.cli(hub, "enroll agent1 --insecure").stdout.splitlines()
                if ln.startswith("curl "))
    agent = lab.node(f"hubagent-{lab.made + 1}")
    agent.sh(line, timeout=600)
    agent.sh("systemctl enable --now homelab-agent")
    nodelab.poll(lambda: count_events(hub, "agent1"), 120, what="events from agent1")

    # the hub under its unit proposes (its guards read its own addresses), a person approves
    # with the CLI as the hub's user, the node runs the signed job, the fix is verified
    fail_flaky(agent)
    pid = nodelab.poll(lambda: hubnode.query(
        hub, "SELECT id FROM proposals WHERE node = 'agent1' AND playbook = 'restart-unit' "
             "AND params LIKE '%flaky.service%'"), 120, what="a restart-unit proposal")[0][0]
    hubnode.cli(hub, f"approve {pid} --yes")
    state = nodelab.poll(lambda: (s := proposal_state(hub, pid)) in ("verified", "not verified", "failed")
                         and s, 180, what=f"proposal {pid} to end")
    assert state == "verified", hubnode.cli(hub, f"proposals show {pid}", check=False).stdout

    # restart and reboot keep the data, and events keep arriving after each
    for how in ("restart", "reboot"):
        before = count_events(hub, "agent1")
        if how == "restart":
            hub.sh("systemctl restart homelab-hub")
        else:
            hub.reboot()
        hubnode.wait_answering(hub)
        assert count_events(hub, "agent1") >= before, how
        assert proposal_state(hub, pid) == "verified", how
        nodelab.poll(lambda b=before: count_events(hub, "agent1") > b, 180,
                     what=f"new events from agent1 after the hub's {how}")

    # its log is in the journal: the hub's own lines, across both boots
    log = hub.sh("journalctl --no-pager -o cat -u homelab-hub").stdout
    assert log.count("hub serving on 0.0.0.0:8470, data in /var/lib/homelab") >= 3, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
