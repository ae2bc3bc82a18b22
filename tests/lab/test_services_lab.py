"""The services collector against a real systemd: a service that crashes and is restarted by
`Restart=` between two polls is in the same state at both, and the hub still learns of the
restart (the collector re-reads a unit whose invocation ID changed, agent/collectors/services.py)."""

from __future__ import annotations

from nodelab import poll

UNIT = """[Unit]
Description=lab: a service systemd restarts when it dies
[Service]
ExecStart=/bin/sleep infinity
Restart=always
RestartSec=200ms
"""


def test_restart_between_polls_is_reported(lab, enrolled):
    node = enrolled()
    hub = lab.hub
    node.write("/etc/systemd/system/lab-crash.service", UNIT)
    node.sh("systemctl daemon-reload && systemctl start lab-crash")

    def row():
        return hub.query("SELECT active, sub, restarts FROM services WHERE node = ? AND unit = 'lab-crash.service'",
                         (node.name,))

    poll(lambda: row() == [("active", "running", 0)], 120, what="the twin to see lab-crash running")
    node.sh("systemctl kill -s KILL lab-crash")
    poll(lambda: node.sh("systemctl show -p NRestarts --value lab-crash").stdout.strip() == "1"
         and node.sh("systemctl show -p SubState --value lab-crash").stdout.strip() == "running",
         30, what="systemd to restart lab-crash")
    # back to active/running well within one poll: only the new invocation says it restarted
    poll(lambda: row() == [("active", "running", 1)], 120, what="the twin to see the restart")
    changes = hub.query("SELECT previous, active, restarts FROM service_changes WHERE node = ? "
                        "AND unit = 'lab-crash.service' ORDER BY seq", (node.name,))
    assert changes[-1] == ("active", "active", 1), changes
