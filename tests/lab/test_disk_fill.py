"""A filling disk on a real node, through the shipped rule: the node's /tmp is a tmpfs (nspawn
mounts one, as Debian 13, Fedora and Arch do), shrunk to 16M and filled past 90% with old
files; the agent, under its unit with PrivateTmp=, samples it; the shipped `disk-almost-full` fires after its
real `for: 5m`; `disk-report` runs by itself and its evidence picks `clean-tmp /tmp`; a person
approves; the node's real /tmp is cleaned and the next sample verifies the fix.

Before the agent reported every mount, this could not fire: in a container the agent saw only
nspawn's bind mounts of the host's disk (docs/lab.md)."""

from __future__ import annotations

import json

from labheal import approve_and_wait
from nodelab import poll


def mounts_seen(hub, node: str) -> dict[str, float]:
    """The last disk_used_ratio the hub holds for each of the node's mounts."""
    rows = hub.query("SELECT s.labels, (SELECT value FROM samples WHERE series = s.id ORDER BY ts DESC LIMIT 1) "
                     "FROM series s WHERE s.node = ? AND s.name = 'disk_used_ratio'", (node,))
    return {labels: value for labels, value in rows}


def test_full_tmpfs_fires_the_shipped_rule_diagnosed_cleaned_and_verified(lab, enrolled):
    node = enrolled()
    hub = lab.hub
    # nspawn mounts the node's /tmp as a tmpfs (half the host's memory); make it small. The
    # agent's PrivateTmp= /tmp is a directory on that same filesystem.
    assert node.sh("findmnt -n -o FSTYPE /tmp").stdout.strip() == "tmpfs"
    node.sh("mount -o remount,size=16M /tmp")
    node.sh("i=0; while [ $i -lt 60 ]; do head -c 250000 /dev/urandom > /tmp/lab-old-$i || break;"
            " touch -d '2 days ago' /tmp/lab-old-$i; i=$((i + 1)); done; echo keep > /tmp/lab-new")
    used = node.sh("df --output=pcent /tmp | tail -1").stdout.strip()
    assert int(used.rstrip("%")) >= 91, used

    # the agent, in its own mount namespace, reports the node's /tmp (the overlay root too)
    try:
        seen = poll(lambda: (m := mounts_seen(hub, node.name)) and any('"/tmp"' in k and v >= 0.9 for k, v in m.items())
                    and m, 120, what="the node's /tmp over 90% at the hub")
    except AssertionError as e:  # say what the agent did report
        raise AssertionError(f"{e}; the hub has {mounts_seen(hub, node.name)}") from None
    assert any('"/"' in k for k in seen), seen
    assert not [k for k in seen if "/run/host" in k], seen  # nspawn's view of the host's disk

    poll(lambda: hub.query("SELECT id FROM alerts WHERE node = ? AND rule = 'disk-almost-full' "
                           "AND state = 'firing' AND key LIKE '%\"/tmp\"%'", (node.name,)), 480, interval=5, what="disk-almost-full firing for /tmp (its for: is 5m)")
    diag = poll(lambda: hub.query("SELECT id, state, output FROM proposals WHERE node = ? AND playbook = 'disk-report'"
                                  " AND params LIKE '%\"/tmp\"%' AND state IN ('diagnosed', 'failed', 'timeout')",
                                  (node.name,)), 180, what="disk-report to run by itself")[0]
    assert diag[1] == "diagnosed", diag
    assert "largest reclaimable: clean-tmp /tmp" in diag[2], diag[2]
    pid = poll(lambda: hub.query("SELECT id FROM proposals WHERE node = ? AND playbook = 'clean-tmp'", (node.name,)),
               120, what="clean-tmp proposed from the evidence")[0][0]
    p = json.loads(hub.cli("proposals", "show", str(pid), "--json").stdout)
    assert (p["rule"], p["params"], p["state"]) == ("disk-almost-full", {"path": "/tmp", "age": "86400"}, "proposed"), p
    detail = approve_and_wait(hub, pid)  # the hub's verdict, or where it stuck
    assert detail["state"] == "verified", detail
    left = node.sh("ls /tmp").stdout.split()
    assert "lab-new" in left and not [f for f in left if f.startswith("lab-old-")], left
    assert int(node.sh("df --output=pcent /tmp | tail -1").stdout.strip().rstrip("%")) < 90
