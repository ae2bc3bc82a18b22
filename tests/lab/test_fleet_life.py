"""A node's life on a real system: packages installed and removed with dpkg and apt, and a
node that loses its network for a while and then catches up, every event exactly once."""

from __future__ import annotations

import time

from nodelab import ip, poll

CONTROL = """Package: lab-hello
Version: 1.0-1
Architecture: all
Maintainer: Lab <lab@example.invalid>
Description: a package built in the node lab
"""


def test_local_deb_install_and_remove_reach_events_and_twin(lab, enrolled):
    node = enrolled()
    hub = lab.hub
    node.sh("mkdir -p /root/pkg/DEBIAN /root/pkg/usr/share/lab-hello")
    node.write("/root/pkg/DEBIAN/control", CONTROL)
    node.sh("echo hello > /root/pkg/usr/share/lab-hello/README && dpkg-deb --root-owner-group --build /root/pkg /root/lab-hello_1.0-1_all.deb")
    node.sh("apt-get install -y -q /root/lab-hello_1.0-1_all.deb", timeout=300)

    def twin():
        return hub.query("SELECT version, state FROM packages WHERE node = ? AND name = 'lab-hello'", (node.name,))

    poll(lambda: twin() == [("1.0-1", "installed")], 120, what="lab-hello installed in the twin")
    node.sh("dpkg -r lab-hello")
    poll(lambda: twin() and twin()[0][1] in ("removed", "purged"), 120, what="lab-hello removed in the twin")
    changes = hub.query("SELECT action, version FROM package_changes WHERE node = ? AND name = 'lab-hello' ORDER BY ts",
                        (node.name,))
    actions = [a for a, _ in changes]
    assert actions and actions[0] == "install" and actions[-1] in ("remove", "purge"), changes
    assert actions.count("install") == 1, changes
    assert hub.query("SELECT count(*) FROM installed_packages WHERE node = ? AND name = 'lab-hello'",
                     (node.name,))[0][0] == 0


def test_node_offline_for_a_while_catches_up_exactly_once(lab, enrolled):
    node = enrolled()
    hub = lab.hub
    # following the journal before the cut
    ready = iter(range(1000))
    poll(lambda: node.sh(f"systemd-cat -t lab-ready echo ready-{next(ready)}") and hub.query(
        "SELECT 1 FROM logs WHERE node = ? AND program = 'lab-ready'", (node.name,)), 90, interval=2,
        what="the agent to follow the journal")
    ip("link", "set", node.link, "down")  # the node's only way out
    try:
        assert node.sh(f"curl -sS -m 3 -o /dev/null {hub.url}/", check=False).returncode != 0
        lines = [f"lab-offline-{node.name}-{i}" for i in range(30)]
        for i in range(0, 30, 10):  # spread over the outage
            node.sh("systemd-run --quiet --wait -p Type=oneshot /bin/sh -c "
                    f"'for l in {' '.join(lines[i:i + 10])}; do echo $l; done'")
            time.sleep(5)
        # and a restart while offline: the spool, not memory, holds what was not sent
        node.sh("systemctl restart homelab-agent")
        time.sleep(5)
        assert hub.query("SELECT count(*) FROM logs WHERE node = ? AND message LIKE 'lab-offline-%'",
                         (node.name,))[0][0] == 0
        log = node.journal()
        assert "cannot connect" in log or "timed out" in log.lower(), log[-2000:]
    finally:
        ip("link", "set", node.link, "up")

    def got():
        return hub.query("SELECT message, count(*) FROM logs WHERE node = ? AND message LIKE 'lab-offline-%' "
                         "GROUP BY message", (node.name,))

    poll(lambda: len(got()) == 30, 120, what="all 30 lines after the network came back")
    time.sleep(3)  # anything sent twice would land by now
    assert sorted(got()) == sorted((line, 1) for line in lines)
    # and the sequence the hub holds for the node has no gap: nothing lost in between
    seqs = [s for (s,) in hub.query("SELECT seq FROM events WHERE node = ? ORDER BY seq", (node.name,))]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap in the node's sequence"
