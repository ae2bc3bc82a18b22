"""The heal loop on real systemd nodes: a unit that really fails, the rule, the proposal, a
person's `homelab-hub approve`, the playbook as its own transient unit, the hub's verdict; and a
node that refuses remote execution, with the hub saying why."""

from __future__ import annotations

import json

from nodelab import poll

# Fails on its first start, runs on the next: what a restart fixes (a race at boot, a
# dependency that came up late).
FLAKY = """[Unit]
Description=lab: fails once, then runs
[Service]
ExecStart=/bin/sh -c 'if [ -e /run/flaky.once ]; then exec sleep infinity; fi; touch /run/flaky.once; echo flaky: dependency not ready >&2; exit 3'
"""


def proposal_for(hub, node: str, playbook: str, unit: str):
    rows = hub.query("SELECT id, state FROM proposals WHERE node = ? AND playbook = ? AND params LIKE ? "
                     "ORDER BY id DESC LIMIT 1", (node, playbook, f'%"{unit}"%'))
    return rows[0] if rows else None


def show(hub, pid: int) -> dict:
    return json.loads(hub.cli("proposals", "show", str(pid), "--json").stdout)


def fail_flaky(node) -> None:
    node.write("/etc/systemd/system/flaky.service", FLAKY)
    node.sh("systemctl daemon-reload; systemctl start flaky.service || true")
    assert node.sh("systemctl is-failed flaky.service", check=False).stdout.strip() == "failed"


def test_failed_unit_restarted_by_approved_transient_unit_and_verified(lab, enrolled):
    node = enrolled()
    hub = lab.hub
    fail_flaky(node)
    # services collector -> unit-failed rule -> restart-unit proposed, waiting for a person
    pid, _ = poll(lambda: proposal_for(hub, node.name, "restart-unit", "flaky.service"), 120,
                  what="a restart-unit proposal for flaky.service")
    assert hub.query("SELECT state FROM proposals WHERE id = ?", (pid,))[0][0] == "proposed"
    assert node.sh("systemctl is-failed flaky.service", check=False).stdout.strip() == "failed"

    hub.cli("approve", str(pid), "--yes")
    state = poll(lambda: (s := hub.query("SELECT state FROM proposals WHERE id = ?", (pid,))[0][0])
                 in ("verified", "not verified", "failed") and s, 180, what=f"proposal {pid} to end")
    detail = show(hub, pid)
    assert state == "verified", detail
    assert node.sh("systemctl is-active flaky.service", check=False).stdout.strip() == "active"
    run = next(j for j in detail["jobs"] if j["mode"] == "run")
    # it ran outside the agent's sandbox, as its own unit, and the agent collected its output
    assert f"homelab-job-{run['id']}.service" in run["output"], run["output"]
    assert "Finished with result: success" in run["output"], run["output"]
    assert "flaky.service" in run["output"]
    journal = node.sh(f"journalctl --no-pager -u homelab-job-{run['id']}.service", check=False).stdout
    assert "homelab playbook restart-unit" in journal, journal


def test_exec_false_node_refuses_approved_job_and_hub_says_why(lab, enrolled):
    node = enrolled()
    hub = lab.hub
    # the node's own lock, set on the node; nothing from the hub can lift it
    node.sh("echo 'exec = false' >> /var/lib/homelab-agent/agent.toml && systemctl restart homelab-agent")
    fail_flaky(node)
    pid, _ = poll(lambda: proposal_for(hub, node.name, "restart-unit", "flaky.service"), 120,
                  what="a restart-unit proposal for flaky.service")
    hub.cli("approve", str(pid), "--yes")
    poll(lambda: hub.query("SELECT state FROM proposals WHERE id = ?", (pid,))[0][0] == "failed", 120,
         what=f"proposal {pid} to fail")
    detail = show(hub, pid)
    assert "exec = false" in (detail["reason"] or ""), detail
    shown = hub.cli("proposals", "show", str(pid)).stdout
    assert "remote execution is disabled on this node (exec = false)" in shown, shown
    # and nothing ran: the unit is still failed, no job unit ever started
    assert node.sh("systemctl is-failed flaky.service", check=False).stdout.strip() == "failed"
    assert "homelab-job-" not in node.sh("journalctl --no-pager -o cat", check=False).stdout


# Fails on every start: what a restart cannot fix.
BROKEN = """[Unit]
Description=lab: always fails
[Service]
ExecStart=/bin/sh -c 'echo broken: config missing >&2; exit 3'
"""


def test_failed_unit_restarted_under_a_standing_policy_with_no_prompt(lab, enrolled):
    """A person approves restart-unit once, for this node and units named *.service; a unit
    that fails is restarted with no prompt, verified, and audited as the policy's. A unit a
    restart cannot fix ends unverified twice and the policy suspends itself."""
    node = enrolled()
    hub = lab.hub
    r = hub.cli("policy", "add", "restart-unit", "--node", node.name,
                "--param", "unit=~[a-z-]+[.]service", "--rate", "10/1h", "--yes")
    assert "policy 1 approved" in r.stdout, r.stdout
    fail_flaky(node)
    pid, _ = poll(lambda: proposal_for(hub, node.name, "restart-unit", "flaky.service"), 120,
                  what="a restart-unit proposal for flaky.service")
    state = poll(lambda: (s := hub.query("SELECT state FROM proposals WHERE id = ?", (pid,))[0][0])
                 in ("verified", "not verified", "failed") and s, 240, what=f"proposal {pid} to end")
    assert state == "verified", show(hub, pid)
    assert node.sh("systemctl is-active flaky.service", check=False).stdout.strip() == "active"
    approvals = hub.query("SELECT actor FROM audit WHERE action = 'approved' AND proposal_id = ?", (pid,))
    assert approvals == [("policy:1",)], hub.query("SELECT actor, action FROM audit WHERE proposal_id = ?", (pid,))
    assert hub.cli("audit", "verify").returncode == 0

    # a unit a restart cannot fix: two unverified runs in a row suspend the policy. Each run
    # answers one firing of the alert, so the unit leaves the failed state (reset-failed: the
    # services collector sees it inactive, the alert resolves) and fails again in between.
    def restarts():
        return hub.query("SELECT id, state FROM proposals WHERE node = ? AND playbook = 'restart-unit'"
                         " AND params LIKE '%broken.service%' ORDER BY id", (node.name,))

    def unit_is(active):
        return hub.query("SELECT active FROM services WHERE node = ? AND unit = 'broken.service'",
                         (node.name,)) == [(active,)]

    node.write("/etc/systemd/system/broken.service", BROKEN)
    node.sh("systemctl daemon-reload; systemctl start broken.service || true")
    for run in (1, 2):
        poll(lambda n=run: len([r for r in restarts() if r[1] in ("not verified", "failed")]) >= n, 300,
             what=f"unverified restart {run} of broken.service")
        if run == 1:
            node.sh("systemctl reset-failed broken.service")
            poll(lambda: unit_is("inactive"), 90, what="the twin to see broken.service inactive")
            node.sh("systemctl start broken.service || true")
    poll(lambda: hub.query("SELECT state FROM policies WHERE id = 1") == [("suspended",)], 60,
         what="the policy to suspend itself after two unverified restarts")
    assert hub.query("SELECT count(*) FROM audit WHERE action = 'policy suspended'") == [(1,)]
    assert all(r[1] in ("not verified", "failed") for r in restarts()), restarts()
