"""`homelab-hub db export` / `db import` on a real hub database: what leaves (no secrets),
what may come in (tables a person authors, all or nothing), and errors that name the row."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hub.auth import hash_secret
from hub.cli import cli
from hub.store import open_db


@pytest.fixture
def data_dir(tmp_path):
    db = open_db(tmp_path / "homelab.db")
    db.execute("INSERT INTO nodes (name, created, credential_hash) VALUES ('nas01', 1, ?)",
               (hash_secret("hlc_secret"),))
    db.close()
    return tmp_path


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_export_leaves_secrets_out_in_either_format(data_dir, tmp_path):
    r = run("db", "export", "nodes", "--data-dir", str(data_dir))
    assert r.exit_code == 0, r.output
    [row] = [json.loads(line) for line in r.output.splitlines()]
    assert row["name"] == "nas01" and row["credential_hash"] is None
    out = tmp_path / "nodes.csv"
    r = run("db", "export", "nodes", "--format", "csv", "-o", str(out), "--data-dir", str(data_dir))
    assert r.exit_code == 0 and "1 rows of nodes written" in r.output
    header, line = out.read_text().splitlines()
    assert "credential_hash" in header and hash_secret("hlc_secret") not in line
    r = run("db", "export", "kb_categories", "--where", "name = 'storage'", "--data-dir", str(data_dir))
    assert [json.loads(x)["name"] for x in r.output.splitlines()] == ["storage"]


def test_export_errors_name_what_is_wrong(data_dir):
    r = run("db", "export", "nope", "--data-dir", str(data_dir))
    assert r.exit_code == 1 and "no table or view 'nope'" in r.output and "kb_categories" in r.output
    r = run("db", "export", "nodes", "--where", "no_such_column = 1", "--data-dir", str(data_dir))
    assert r.exit_code == 1 and "--where" in r.output and "no_such_column" in r.output


def test_import_upserts_by_primary_key_all_or_nothing(data_dir, tmp_path):
    f = tmp_path / "cats.jsonl"
    f.write_text('{"name": "backups"}\n{"name": "storage", "active": 0}\n')
    r = run("db", "import", "kb_categories", str(f), "--data-dir", str(data_dir))
    assert r.exit_code == 0 and "2 rows imported" in r.output, r.output
    r = run("db", "import", "kb_categories", str(f), "--data-dir", str(data_dir))  # again: no dupes
    exported = [json.loads(x) for x in run("db", "export", "kb_categories", "--data-dir",
                                           str(data_dir)).output.splitlines()]
    assert [c["name"] for c in exported].count("backups") == 1
    assert {c["name"]: c["active"] for c in exported}["storage"] == 0
    # a row that breaks a constraint (a category that does not exist) changes nothing at all
    bad = tmp_path / "training.jsonl"
    bad.write_text("".join(json.dumps({"category": c, "source": "person", "text": "t", "created": 1})
                           + "\n" for c in ("storage", "no-such-category")))
    r = run("db", "import", "kb_training", str(bad), "--data-dir", str(data_dir))
    assert r.exit_code == 1 and "FOREIGN KEY" in r.output and "nothing was imported" in r.output
    assert run("db", "export", "kb_training", "--data-dir", str(data_dir)).output == ""


def test_import_refuses_what_the_hub_derives_and_names_the_bad_row(data_dir, tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"name": "evil"}\n')
    r = run("db", "import", "events", str(f), "--data-dir", str(data_dir))
    assert r.exit_code == 1 and "'events' cannot be imported" in r.output and "kb_categories" in r.output
    f.write_text('{"name": "ok"}\n{"name": "x", "colour": "red"}\n')
    r = run("db", "import", "kb_categories", str(f), "--data-dir", str(data_dir))
    assert r.exit_code == 1 and "row 2" in r.output and "'colour'" in r.output
    f.write_text('{"name": "ok"}\nnot json\n')
    r = run("db", "import", "kb_categories", str(f), "--data-dir", str(data_dir))
    assert r.exit_code == 1 and "line 2: not JSON" in r.output
