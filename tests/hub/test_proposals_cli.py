"""The person's side: `proposals`, `proposals show`, `approve`, `reject`, `audit verify`,
`playbooks list|show|check`, on a real database file."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from agent import playbook as pbm
from hub.cli import cli
from hub.playbooks import cli as pb_cmds
from hub.proposals import cli as prop_cmds
from hub.proposals import state as proposals
from hub.store import open_db
from tests.conftest import ROOT

for _cmd in prop_cmds.COMMANDS + pb_cmds.COMMANDS:
    cli.add_command(_cmd)


@pytest.fixture
def env(tmp_path, monkeypatch):
    for k in [k for k in __import__("os").environ if k.startswith("HOMELAB_")]:
        monkeypatch.delenv(k)
    books = tmp_path / "playbooks"
    shutil.copytree(ROOT / "playbooks", books)
    monkeypatch.setenv("HOMELAB_HUB_PLAYBOOKS_DIR", str(books))
    data = tmp_path / "hub"
    db = open_db(data / "homelab.db")
    db.execute("INSERT INTO nodes (name, created) VALUES ('n1', 0)")

    def propose(name="clean-tmp", params=None):
        pb = pbm.load_dir(books)[name]
        db.execute("BEGIN IMMEDIATE")
        pid = proposals.create(db, node="n1", pb=pb, params=params if params is not None else {"path": "/tmp/x"},
                               rule="tmp-growing", why="alert 1 (tmp-growing) firing on n1", evidence=[11, 12])
        db.execute("COMMIT")
        return pid

    yield data, books, propose, db
    db.close()


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


def test_list_show_approve(env):
    data, books, propose, db = env
    db.execute("INSERT INTO events (id, node, seq, ts, kind, data) VALUES (11, 'n1', 1, 0, 'file', ?)",
               ('{"kind":"file","action":"create","path":"/tmp/x/junk-1"}',))
    pid = propose()
    r = run("proposals", "--data-dir", data, "--json")
    [row] = [json.loads(line) for line in r.output.splitlines()]
    assert (row["id"], row["state"], row["playbook"], row["params"]) == (pid, "proposed", "clean-tmp",
                                                                        {"age": "604800", "path": "/tmp/x"})
    shown = run("proposals", "show", pid, "--data-dir", data)
    assert shown.exit_code == 0
    for needle in ("PARAM_PATH=\"/tmp/x\"", "PARAM_AGE=\"604800\"", "tmp-growing", "11", "not run before approval",
                   "name: clean-tmp", "realpath", "event 11", "/tmp/x/junk-1", "- 12"):
        assert needle in shown.output, needle
    # no --yes: asks, and a "no" changes nothing
    r = run("approve", pid, "--data-dir", data, input="n\n")
    assert r.exit_code != 0 and proposals.get(db, pid)["state"] == "proposed"
    r = run("approve", pid, "--data-dir", data, input="y\n")
    assert r.exit_code == 0 and "approved by" in r.output
    p = proposals.get(db, pid)
    assert p["state"] == "approved" and p["approved_by"] and p["approval_sha256"] == p["sha256"]
    assert run("proposals", "--state", "approved", "--data-dir", data, "--json").output.count("\n") == 1
    assert run("proposals", "--state", "nonsense", "--data-dir", data).exit_code != 0
    r = run("approve", pid, "--yes", "--data-dir", data)
    assert r.exit_code != 0 and "only a proposed one can be approved" in r.output


def test_show_keeps_the_proposed_script_when_the_file_changes(env):
    data, books, propose, _db = env
    pid = propose()
    with open(books / "clean-tmp.sh", "a") as f:
        f.write("\necho sneaky-edit\n")
    shown = run("proposals", "show", pid, "--data-dir", data)
    assert "script changed since this was proposed" in shown.output
    assert "sneaky-edit" not in shown.output
    r = run("approve", pid, "--yes", "--data-dir", data)
    assert r.exit_code != 0 and "changed since proposal" in r.output


def test_reject_needs_a_reason_and_records_it(env):
    data, _books, propose, db = env
    pid = propose()
    assert run("reject", pid, "--data-dir", data).exit_code != 0  # --reason is required
    r = run("reject", pid, "--reason", "I will do it by hand", "--data-dir", data)
    assert r.exit_code == 0 and "rejected by" in r.output
    p = proposals.get(db, pid)
    assert (p["state"], p["reason"]) == ("rejected", "I will do it by hand")
    assert run("approve", pid, "--yes", "--data-dir", data).exit_code != 0


def test_destructive_tier_requires_typing_the_node_name(env):
    data, books, propose, db = env
    f = books / "apt-autoremove.sh"
    f.write_text(f.read_text().replace("risk: change", "risk: destructive"))
    pid = propose("apt-autoremove", {})
    r = run("approve", pid, "--yes", "--data-dir", data)
    assert r.exit_code != 0 and "--confirm-node" in r.output
    r = run("approve", pid, "--data-dir", data, input="y\nn2\n")
    assert r.exit_code != 0 and "typing the node name 'n1'" in r.output
    assert proposals.get(db, pid)["state"] == "proposed"
    r = run("approve", pid, "--data-dir", data, input="y\nn1\n")
    assert r.exit_code == 0 and proposals.get(db, pid)["state"] == "approved"


def test_audit_verify_cli_detects_tampering(env):
    data, _books, propose, db = env
    pid = propose()
    run("reject", pid, "--reason", "no", "--data-dir", data)
    r = run("audit", "verify", "--data-dir", data)
    assert r.exit_code == 0 and "intact: 2 rows" in r.output
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET actor = 'someone-else' WHERE id = 2")
    r = run("audit", "verify", "--data-dir", data)
    assert r.exit_code != 0 and "BROKEN at row 2" in r.output


def test_playbooks_list_show_check(env, tmp_path):
    data, books, _propose, _db = env
    r = run("playbooks", "list", "--json", "--data-dir", data)
    names = {json.loads(line)["name"] for line in r.output.splitlines() if line.startswith("{")}
    assert {"clean-tmp", "block-address", "unit-logs"} <= names
    r = run("playbooks", "show", "block-address", "--data-dir", data)
    assert r.exit_code == 0 and '"address"' in r.output and "nft add element" in r.output
    assert run("playbooks", "show", "nope", "--data-dir", data).exit_code != 0
    (books / "broken.sh").write_text("#!/bin/bash\n# ---\n# name: broken\n# ---\necho hi\n")
    r = run("playbooks", "check", "--data-dir", data)
    assert r.exit_code != 0 and "broken.sh:3: description: required key is missing" in r.output
    r = run("playbooks", "list", "--data-dir", data)
    assert r.exit_code == 0 and "left out" in r.output


def test_requests_listing_shows_what_became_of_each(env):
    data, _books, _propose, db = env
    db.execute("BEGIN IMMEDIATE")
    proposals.record_request(db, {"id": 9, "node": "n1", "rule_name": "ssh-brute-force", "transition": "firing",
                                  "propose": [{"playbook": "block-address", "params": {"address": "1.2.3.4; id"}}]})
    db.execute("COMMIT")
    r = run("proposals", "--requests", "--data-dir", data)
    assert r.exit_code == 0 and "alert 9 (ssh-brute-force) on n1: waiting for the hub" in r.output
    db.execute("UPDATE proposal_requests SET done = 1, outcome = 'refused: block-address: bad address'")
    [row] = [json.loads(line) for line in run("proposals", "--requests", "--json", "--data-dir", data).output.splitlines()]
    assert row["outcome"].startswith("refused:") and row["candidates"][0]["playbook"] == "block-address"
