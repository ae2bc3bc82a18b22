"""The shipped disk fixes on a real Debian node: the journal, packages no longer needed and an
oversized log made real, the fix proposed (through a marker rule, tests/lab/rules/lab.yaml),
approved, run as a transient unit, and the hub's verdict matching what happened on the node."""

from __future__ import annotations

from labheal import approve_and_wait, proposed, run_output


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
    node.sh("touch /etc/lab-journal-vacuum")
    detail = approve_and_wait(hub, proposed(hub, node.name, "journal-vacuum"))
    after = journal_bytes(node)
    assert detail["state"] == "verified", detail
    assert "Deleted archived journal" in run_output(detail), run_output(detail)
    assert after <= 16 << 20 < before, (before, after)
