"""A playbook that changes the machine acts on the machine, not on the agent's sandbox: the
shipped unit once gave the agent a private /tmp, and clean-tmp run inside it cleaned that and
still reported "verified". As its own transient unit it cleans the node's real /tmp."""

from __future__ import annotations

from labheal import approve_and_wait, mark
from nodelab import poll


def test_clean_tmp_cleans_the_real_tmp_not_the_agents_private_one(lab, enrolled):
    node = enrolled()
    hub = lab.hub
    node.sh("for i in 1 2 3; do head -c 100000 /dev/zero > /tmp/lab-old-$i; touch -d '2 days ago' /tmp/lab-old-$i; done;"
            " echo new > /tmp/lab-new")
    mark(node, hub, "/etc/lab-clean-tmp")  # the lab rule's marker (tests/lab/rules/lab.yaml)
    pid = poll(lambda: hub.query("SELECT id FROM proposals WHERE node = ? AND playbook = 'clean-tmp' "
                                 "AND state = 'proposed'", (node.name,)), 120,
               what="a clean-tmp proposal")[0][0]
    detail = approve_and_wait(hub, pid)  # the hub's verdict, or where it stuck
    assert detail["state"] == "verified", detail
    left = node.sh("ls /tmp").stdout.split()
    assert "lab-new" in left and not [f for f in left if f.startswith("lab-old-")], left
