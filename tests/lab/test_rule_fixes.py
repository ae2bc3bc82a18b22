"""Shipped rules whose fixes were only tested on their choice logic, made real on a booted
Debian node: /tmp filling (tmp-growing, a files rule) and a security update waiting in a local
apt repository (security-updates-pending, through a copy without its hour-long `for`)."""

from __future__ import annotations

from labheal import (
    ENDED,
    approve_and_wait,
    build_deb,
    proposed,
    run_output,
    security_repo,
    show,
    state,
)
from nodelab import poll


def test_tmp_growing_fires_on_the_real_tmp_and_clean_tmp_runs(lab, enrolled):
    """tmp-growing counts what the files collector sees written under /tmp, so the agent must
    watch the node's /tmp, not a private one of its own (PrivateTmp= in its unit)."""
    node = enrolled()
    hub = lab.hub
    node.sh("echo 'watch = [\"/etc\", \"/tmp\"]' >> /var/lib/homelab-agent/agent.toml && systemctl restart homelab-agent")
    seen = iter(range(1000))  # the restarted agent watches /tmp once a new file there reaches the hub
    poll(lambda: node.sh(f"echo > /tmp/lab-watch-{next(seen)}") and hub.query(
        "SELECT 1 FROM file_changes WHERE node = ? AND path LIKE '/tmp/lab-watch-%'", (node.name,)), 90,
        interval=2, what="the agent to watch /tmp")
    node.sh("for i in 1 2 3; do head -c 100000 /dev/zero > /tmp/lab-old-$i; touch -d '10 days ago' /tmp/lab-old-$i; done")
    # 1.1 GiB written under /tmp within the hour (sparse: the size counts, no disk is used)
    node.sh("truncate -s 1100M /tmp/lab-big")
    pid = proposed(hub, node.name, "clean-tmp")
    alert = hub.query("SELECT a.rule, a.state FROM alerts a JOIN proposals p ON p.alert_id = a.id WHERE p.id = ?", (pid,))
    assert alert == [("tmp-growing", "firing")], alert
    # the rule's params: /tmp, files older than 7 days
    detail = approve_and_wait(hub, pid, until=("succeeded", *ENDED))
    assert detail["state"] not in ("failed", "not verified"), detail
    assert "deleted 3 file(s) under /tmp" in run_output(detail), run_output(detail)
    left = node.sh("ls /tmp").stdout.split()
    assert "lab-big" in left and not [f for f in left if f.startswith("lab-old-")], left
    # the verify step passes (nothing older than 7 days left); the hub's verdict on a windowed
    # rule needs one whole window (1h) of data after the fix, so the proposal waits for it
    poll(lambda: [j for j in show(hub, pid)["jobs"] if j["mode"] == "verify" and j["state"] == "succeeded"], 120,
         what="the verify step")

    def waits_for() -> float:  # the hub's next settle stretches the verify window to the rule's
        return hub.query("SELECT verify_deadline - (SELECT max(ts) FROM proposal_transitions WHERE proposal_id = ?"
                         " AND to_state = 'succeeded') FROM proposals WHERE id = ?", (pid, pid))[0][0] or 0

    poll(lambda: waits_for() >= 3600, 60, what="the verify window stretched to the rule's hour")
    assert state(hub, pid) == "succeeded"


def test_security_update_pending_is_applied_and_verified(lab, enrolled):
    node = enrolled()
    hub = lab.hub
    old, new = build_deb(node, "lab-sec", "1.0-1"), build_deb(node, "lab-sec", "1.0-1+deb12u1")
    security_repo(node, [new])
    simulated = node.sh("apt-get -s -q upgrade").stdout
    # the packages collector follows dpkg's log once its first inventory is out (a change made
    # before that is in the inventory, not in the log it follows)
    poll(lambda: hub.query("SELECT 1 FROM installed_packages WHERE node = ? LIMIT 1", (node.name,)), 120,
         what="the node's first package inventory")
    node.sh(f"dpkg -i {old}")  # a change in dpkg's log: the agent looks for pending updates
    pid = proposed(hub, node.name, "apt-upgrade", timeout=180)
    pending = hub.query("SELECT a.rule FROM alerts a JOIN proposals p ON p.alert_id = a.id WHERE p.id = ?", (pid,))
    assert pending == [("lab-security-updates-pending",)], (pending, simulated)
    detail = approve_and_wait(hub, pid)
    assert detail["state"] == "verified", detail
    assert node.sh("dpkg-query -W -f '${Version}' lab-sec").stdout == "1.0-1+deb12u1"
    # verified on fresh data: the agent looked again after the upgrade and found none pending
    why = detail["history"][-1]["note"]
    assert why in ("the alert resolved", "the rule's condition cleared on data since the fix"), detail["history"]
    assert hub.query("SELECT state FROM alerts WHERE id = ?", (detail["alert_id"],)) == [("resolved",)]
