"""The services collector against a real systemd, where a unit's listed state is the same at two
polls but something happened in between: a service that crashed and was restarted by
`Restart=`, and a failed unit that ran again and failed another way. The hub still learns of
both (the collector watches systemd's invocation links, agent/collectors/services.py)."""

from __future__ import annotations

from nodelab import poll

UNIT = """[Unit]
Description=lab: a service systemd restarts when it dies
[Service]
ExecStart=/bin/sleep infinity
Restart=always
RestartSec=200ms
"""

FAILING = """[Unit]
Description=lab: a oneshot that fails ({how})
[Service]
Type=oneshot
ExecStart=/bin/sh -c '{cmd}'
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

    # a failed unit runs again and fails another way: failed/failed at every poll
    def failing(how: str, cmd: str) -> None:
        node.write("/etc/systemd/system/lab-fail.service", FAILING.format(how=how, cmd=cmd))
        node.sh("systemctl daemon-reload && systemctl start lab-fail", check=False)

    def fail_row():
        return hub.query("SELECT active, result FROM services WHERE node = ? AND unit = 'lab-fail.service'",
                         (node.name,))

    failing("by its exit code", "exit 3")
    poll(lambda: fail_row() == [("failed", "exit-code")], 120, what="the twin to see lab-fail failed (exit-code)")
    failing("killed", "kill -KILL $$$$")  # systemd turns $$ into $
    assert node.sh("systemctl show -p Result --value lab-fail").stdout.strip() == "signal"
    poll(lambda: fail_row() == [("failed", "signal")], 120, what="the twin to see lab-fail fail again (signal)")


LATE_EXIT = """[Unit]
Description=lab: a service whose process exits long after it started; the unit stays active
[Service]
ExecStart=/bin/sleep {seconds}
RemainAfterExit=yes
"""


def test_a_change_no_start_announces_is_seen_at_the_next_full_look(lab, enrolled):
    """The agent skips its systemctl poll while no unit moved; a unit that goes from
    active/running to active/exited on its own (its process ended, RemainAfterExit=) starts
    and stops nothing, and is still reported, at the latest RESYNC seconds on."""
    from agent.collectors.services import RESYNC

    node = enrolled()
    hub = lab.hub
    sleep = 45  # long enough for the polls to settle while it runs
    node.write("/etc/systemd/system/lab-late.service", LATE_EXIT.format(seconds=sleep))
    node.sh("systemctl daemon-reload && systemctl start lab-late")

    def row():
        return hub.query("SELECT active, sub FROM services WHERE node = ? AND unit = 'lab-late.service'",
                         (node.name,))

    poll(lambda: row() == [("active", "running")], 120, what="the twin to see lab-late running")
    poll(lambda: node.sh("systemctl show -p SubState --value lab-late").stdout.strip() == "exited",
         sleep + 30, what="lab-late's process to end")
    poll(lambda: row() == [("active", "exited")], RESYNC + 60, what="the twin to see lab-late active/exited")
