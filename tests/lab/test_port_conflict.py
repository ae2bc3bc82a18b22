"""A port conflict between two real services: the second cannot bind, the hub runs the
read-only diagnostics by itself (the reason is in their output), an approved restart cannot
fix it and ends failed, not verified, and after the third failure the restart-loop rule stops
further restarts and asks for a person."""

from __future__ import annotations

import time

from nodelab import poll

SERVER = """[Unit]
Description=lab: an HTTP server on port 8080 ({name})
[Service]
ExecStart=/usr/bin/python3 -m http.server --bind 127.0.0.1 8080
"""


def state_of(hub, pid):
    return hub.query("SELECT state FROM proposals WHERE id = ?", (pid,))[0][0]


def test_port_conflict_gets_diagnostics_and_no_restart_loop(lab, enrolled):
    node = enrolled()
    hub = lab.hub
    for name in ("web-a", "web-b"):
        node.write(f"/etc/systemd/system/{name}.service", SERVER.format(name=name))
    node.sh("systemctl daemon-reload && systemctl start web-a")
    poll(lambda: node.sh("curl -sf -o /dev/null http://127.0.0.1:8080/", check=False).returncode == 0, 30,
         what="web-a serving")
    node.sh("systemctl start web-b", check=False)
    poll(lambda: node.sh("systemctl is-failed web-b", check=False).stdout.strip() == "failed", 30,
         what="web-b failed")

    def proposals(playbook):
        return hub.query("SELECT id, state, output FROM proposals WHERE node = ? AND playbook = ? "
                         "AND params LIKE '%web-b.service%' ORDER BY id", (node.name, playbook))

    # diagnostics: the read-only unit-logs ran without anyone approving, and say why
    diag = poll(lambda: [p for p in proposals("unit-logs") if p[1] == "diagnosed"], 180,
                what="unit-logs run by itself for web-b")
    detail = hub.cli("proposals", "show", str(diag[0][0])).stdout
    assert "Address already in use" in detail, detail

    # a person approves a restart; it cannot work while web-a holds the port
    pid = poll(lambda: [p[0] for p in proposals("restart-unit") if p[1] == "proposed"], 120,
               what="a restart-unit proposal for web-b")[0]
    hub.cli("approve", str(pid), "--yes")
    end = poll(lambda: (s := state_of(hub, pid)) in ("failed", "not verified", "verified") and s, 180,
               what=f"proposal {pid} to end")
    assert end in ("failed", "not verified"), hub.cli("proposals", "show", str(pid)).stdout
    assert node.sh("systemctl is-active web-a").stdout.strip() == "active"  # the other one untouched

    def fail_again():
        # each failure must be seen as one: the services collector reports changes, so it has
        # to see web-b leave the failed state (reset-failed: inactive) before it fails again
        node.sh("systemctl reset-failed web-b")
        poll(lambda: hub.query("SELECT active FROM services WHERE node = ? AND unit = 'web-b.service'",
                               (node.name,)) == [("inactive",)], 90, what="the twin to see web-b inactive")
        node.sh("systemctl start web-b", check=False)

    # failures until restart-loop fires (3 in an hour, however the approved restart's failure
    # was sampled): automatic restarts stop, a person must look
    for _ in range(3):
        if hub.query("SELECT 1 FROM alerts WHERE node = ? AND rule = 'restart-loop' AND state = 'firing'",
                     (node.name,)):
            break
        fail_again()
        poll(lambda: hub.query("SELECT active FROM services WHERE node = ? AND unit = 'web-b.service'",
                               (node.name,)) == [("failed",)], 90, what="the twin to see web-b failed")
    poll(lambda: hub.query("SELECT 1 FROM alerts WHERE node = ? AND rule = 'restart-loop' AND state = 'firing' "
                           "AND key LIKE '%web-b.service%'", (node.name,)), 180,
         what="the restart-loop alert for web-b")
    n = len(proposals("restart-unit"))
    fail_again()  # and it fails again
    poll(lambda: node.sh("systemctl is-failed web-b", check=False).stdout.strip() == "failed", 30,
         what="web-b failed again")
    # two service polls later, still no new restart proposal: no loop
    time.sleep(35)
    assert len(proposals("restart-unit")) == n, proposals("restart-unit")
