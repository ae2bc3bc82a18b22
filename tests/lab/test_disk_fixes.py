"""The shipped disk fixes on a real Debian node: the journal, packages no longer needed and an
oversized log made real, the fix proposed (through a marker rule, tests/lab/rules/lab.yaml),
approved, run as a transient unit, and the hub's verdict matching what happened on the node."""

from __future__ import annotations

from labheal import (
    approve_and_wait,
    build_deb,
    install_host_debs,
    mark,
    playbook,
    proposed,
    run_output,
)
from nodelab import poll


def journal_bytes(node) -> int:
    return int(node.sh("du -sb --apparent-size /var/log/journal | cut -f1").stdout)


def test_journal_vacuum_shrinks_a_real_journal(lab, enrolled):
    node = enrolled()
    hub = lab.hub
    # ~40 MB of incompressible lines from a unit: the journal's active file grows to hold them
    node.sh("systemd-run --quiet --wait -p StandardOutput=journal /bin/sh -c "
            "'for i in $(seq 1000); do head -c 30000 /dev/urandom | base64 -w0; echo; done'", timeout=180)
    before = journal_bytes(node)
    assert before > 32 << 20, node.sh("journalctl --disk-usage; ls -la /var/log/journal/*/").stdout
    # over the limit, most or all of it in the active file that vacuum alone never removes
    over = playbook(node, "journal-vacuum", "verify", size="16M")
    assert over.returncode == 1 and "largest active file" in over.stdout, over
    mark(node, hub, "/etc/lab-journal-vacuum")
    detail = approve_and_wait(hub, proposed(hub, node.name, "journal-vacuum"))
    after = journal_bytes(node)
    assert detail["state"] == "verified", detail
    assert "Deleted archived journal" in run_output(detail), run_output(detail)
    assert after <= 16 << 20 < before, (before, after)


def test_journal_vacuum_below_what_journald_keeps_is_not_verified(lab, enrolled):
    """A limit under the size of the fresh file journald starts after rotating (8 MiB) cannot
    be met: the run succeeds, the verify step says so, and the hub does not call it verified."""
    node = enrolled()
    hub = lab.hub
    mark(node, hub, "/etc/lab-journal-vacuum-1m")
    detail = approve_and_wait(hub, proposed(hub, node.name, "journal-vacuum"))
    assert detail["state"] == "not verified", detail
    assert "verify step failed" in (detail["reason"] or ""), detail
    verify = next(j for j in detail["jobs"] if j["mode"] == "verify")["output"]
    assert "limit 1048576 bytes" in verify, verify

def test_apt_autoremove_removes_a_dependency_no_longer_needed(lab, enrolled):
    node = enrolled()
    hub = lab.hub
    lib = build_deb(node, "lab-lib", "1.0-1")
    app = build_deb(node, "lab-app", "1.0-1", depends="lab-lib")
    node.sh(f"apt-get install -y -q {lib} {app} && apt-mark auto lab-lib", timeout=300)
    node.sh("apt-get remove -y -q lab-app", timeout=300)
    assert "Remv lab-lib" in node.sh("apt-get -s autoremove").stdout
    mark(node, hub, "/etc/lab-apt-autoremove")
    detail = approve_and_wait(hub, proposed(hub, node.name, "apt-autoremove"))
    assert detail["state"] == "verified", detail
    assert "Removing lab-lib" in run_output(detail), run_output(detail)
    status = node.sh("dpkg-query -W -f '${db:Status-Abbrev}' lab-lib", check=False).stdout
    assert not status.startswith("ii"), status

    def twin():
        return hub.query("SELECT state FROM packages WHERE node = ? AND name = 'lab-lib'", (node.name,))

    poll(lambda: twin() and twin()[0][0] in ("removed", "purged"), 120, what="lab-lib removed in the twin")


LOGROTATE = """/var/log/lab-app.log {
    size 1M
    rotate 2
    compress
    missingok
}
"""


def test_logrotate_force_rotates_a_big_log(lab, enrolled):
    node = enrolled()
    hub = lab.hub
    install_host_debs(node, ["libpopt0", "logrotate"])  # not in the node image
    node.write("/etc/logrotate.d/lab-app", LOGROTATE)
    node.sh("yes 'lab-app: a line written again and again' | head -c 20000000 > /var/log/lab-app.log")
    due = playbook(node, "logrotate-force", "verify", config="/etc/logrotate.conf")
    assert due.returncode == 1 and "still need rotating" in due.stdout and "\n0 log" not in due.stdout, due
    mark(node, hub, "/etc/lab-logrotate-force")
    detail = approve_and_wait(hub, proposed(hub, node.name, "logrotate-force"))
    assert detail["state"] == "verified", detail
    sizes = dict(line.split()[::-1] for line in node.sh("cd /var/log && du -b lab-app.log*").stdout.splitlines())
    assert int(sizes.get("lab-app.log", "0")) < 1 << 20, sizes
    assert int(sizes["lab-app.log.1.gz"]) < 1 << 20, sizes  # compressed, not just renamed
    verify = next(j for j in detail["jobs"] if j["mode"] == "verify")["output"]
    assert "0 log(s) of /etc/logrotate.conf still need rotating" in verify, verify
