"""ask: templates chosen by retrieval (and a model among the top few), parameters from the
question, every query read-only and limited; free SQL only when switched on."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from brain_fakes import FakeModel

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from bench._brainfleet import build_fleet  # noqa: E402
from hub.brain import ask as askmod  # noqa: E402
from hub.brain.sqlsafe import QueryError, run_select  # noqa: E402
from hub.brain.templates import TEMPLATES  # noqa: E402


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    path = tmp_path_factory.mktemp("fleet") / "homelab.db"
    now = build_fleet(path)
    return path, now


def test_library_has_25_documented_templates_that_all_run(fleet):
    path, now = fleet
    assert len(TEMPLATES) >= 25 and len({t.id for t in TEMPLATES}) == len(TEMPLATES)
    for t in TEMPLATES:
        assert t.title and t.doc and t.words
        found = {"unit": "nginx.service", "package": "openssl", "path": "/etc", "user": "alice", "text": "x"}
        cols, _rows, _ = run_select(path, t.sql, askmod.bind(t, found, now))
        assert cols, t.id


@pytest.mark.parametrize("q,template,first", [
    ("which node is closest to running out of disk?", "disk_closest_full", ["nas", "/srv", 93.0]),
    ("which nodes are offline?", "nodes_offline", ["laptop"]),
    ("who installed htop?", "who_installed", ["laptop"]),
    ("which commands touched /etc/nginx", "commands_path", ["web1"]),
    ("what version of nginx does web1 run", "package_where", ["web1", "nginx", "1.22.1-9"]),
    ("history of nginx.service", "service_history", ["web1"]),
])
def test_no_model_retriever_answers(fleet, q, template, first):
    path, now = fleet
    out = askmod.ask(q, path, model=None, record=None, now=now)
    assert out["template"] == template and out["chosen_by"] == "retriever"
    assert out["rows"][0][: len(first)] == first
    assert out["sql"].startswith("SELECT") and out["columns"]
    json.dumps(out)  # --json must be able to print it



@pytest.mark.parametrize("q,user", [("what did alice run in the last week", "alice"),
                                    ("what did mallory run today", "mallory"),
                                    ("what has alice executed this week", "alice")])
def test_what_did_someone_run_reads_shell_history_not_playbook_runs(fleet, q, user):
    """"what did X run" is X's shell history, whether the hub has seen X or not (it read as
    playbook runs, whose words include "ran")."""
    path, now = fleet
    out = askmod.ask(q, path, model=None, record=None, now=now)
    assert out["template"] == "commands_user" and out["args"]["user"] == user
    if user == "alice":
        assert "sudo apt install htop" in [r[3] for r in out["rows"]]
    assert askmod.extract("what did I run yesterday", {}, now).get("user") is None

def test_period_and_node_come_from_the_question(fleet):
    path, now = fleet
    out = askmod.ask("what changed on nas in the last 3 days", path, model=None, record=None, now=now)
    assert out["args"]["node"] == "nas" and out["args"]["since"] == pytest.approx(now - 3 * 86400)
    assert {r[0] for r in out["rows"]} == {"nas"} and out["rows"]
    longer = askmod.ask("what changed on nas in the last 9 days", path, model=None, record=None, now=now)
    assert len(longer["rows"]) == len(out["rows"]) + 1  # the disk plugged in 8 days ago


def test_model_picks_among_top_few_and_bad_picks_fall_back(fleet):
    path, now = fleet
    q = "how much memory and cpu does pi use"
    top = [t.id for t, _ in askmod.retrieve(q, askmod.extract(q, {"node": {"pi"}}, now))[:4]]
    pick = top[1]
    m = FakeModel({"template": pick})
    out = askmod.ask(q, path, model=m, record=None, now=now)
    schema = m.calls[0]["schema"]
    assert schema["properties"]["template"]["enum"] == top
    if out["chosen_by"] == "model":
        assert out["template"] == pick
    for bad in ({"template": "drop_everything"}, "nope", {"template": top[0], "sql": "DELETE FROM nodes"}):
        out = askmod.ask(q, path, model=FakeModel(bad), record=None, now=now)
        assert out["template"] in top and out["chosen_by"] == "retriever"


def test_decisions_logged(fleet, tmp_path):
    import shutil

    from hub.brain import runtime

    path, now = fleet
    copy = tmp_path / "homelab.db"
    shutil.copy(path, copy)
    runtime.configure(None, copy, None)
    try:
        out = askmod.ask("which units have failed?", copy, model=None, now=now)
    finally:
        runtime.configure(None, None, None)
    row = sqlite3.connect(copy).execute("SELECT purpose, outcome, parsed FROM brain_decisions WHERE id = ?",
                                        (out["decision_id"],)).fetchone()
    assert row[0] == "ask" and row[1] == "no_model" and json.loads(row[2])["template"] == "failed_units"


def test_required_parameter_missing_is_a_clear_error(fleet):
    path, now = fleet
    with pytest.raises(QueryError, match="needs a path"):
        askmod.bind(askmod.BY_ID["commands_path"], {}, now)


def test_howto_goes_to_the_knowledge_base(fleet):
    path, now = fleet
    out = askmod.ask("how do I add a new node?", path, model=None, record=None, now=now)
    assert out["kind"] == "kb" and out["template"] is None and "answer" in out


@pytest.mark.parametrize("sql,why", [
    ("DELETE FROM nodes", "only SELECT"),
    ("SELECT 1; DROP TABLE nodes", "one statement"),
    ("SELECT * FROM join_tokens", "prohibited"),
    ("WITH x AS (SELECT 1) SELECT * FROM x, pragma_table_info('nodes')", "refused"),
    ("SELECT load_extension('/tmp/evil.so')", "refused"),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c", "stopped"),
])
def test_sqlsafe_refuses_writes_secrets_and_runaways(fleet, sql, why):
    path, _ = fleet
    with pytest.raises(QueryError, match=why):
        run_select(path, sql, {}, time_limit=0.3)
    assert sqlite3.connect(path).execute("SELECT count(*) FROM nodes").fetchone()[0] == 5


def test_secret_columns_read_as_null(fleet):
    path, _ = fleet
    cols, rows, _ = run_select(path, "SELECT name, credential_hash FROM nodes", {})
    assert rows and all(r[1] is None for r in rows)
    assert sqlite3.connect(path).execute("SELECT count(*) FROM nodes WHERE credential_hash IS NULL").fetchone()


def test_row_limit(fleet):
    path, _ = fleet
    cols, rows, truncated = run_select(path, "SELECT * FROM samples_1h", {}, row_limit=10)
    assert len(rows) == 10 and truncated


def test_free_sql_only_when_enabled_and_still_sandboxed(fleet):
    path, now = fleet
    q = "zebra quantum flux capacitor"  # nothing in the library fits
    m = FakeModel({"sql": "SELECT name FROM nodes ORDER BY name"})
    off = askmod.ask(q, path, model=m, free_sql=False, record=None, now=now)
    assert off["kind"] == "template"
    on = askmod.ask(q, path, model=m, free_sql=True, record=None, now=now)
    assert on["kind"] == "sql" and [r[0] for r in on["rows"]] == ["db1", "laptop", "nas", "pi", "web1"]
    evil = askmod.ask(q, path, model=FakeModel({"sql": "DELETE FROM nodes"}), free_sql=True, record=None, now=now)
    assert evil["kind"] == "template"  # refused, fell back to the retriever
    assert sqlite3.connect(path).execute("SELECT count(*) FROM nodes").fetchone()[0] == 5


@pytest.mark.parametrize("text,hours", [
    ("what changed today", 24), ("since yesterday", 48), ("this week", 168), ("in the last 3 days", 72),
    ("past two hours", 2), ("5 minutes ago", 5 / 60), ("since monday", 66), ("since 2026-11-20", 138),
    ("which nodes are offline", None),
])
def test_periods(text, hours):
    import datetime as dt

    now = dt.datetime(2026, 11, 25, 18, 0, tzinfo=dt.UTC).timestamp()  # a Wednesday
    got = askmod.parse_since(text, now)
    assert (got is None and hours is None) or got == pytest.approx(hours * 3600)


def test_every_answer_says_how_it_read_the_question(fleet):
    path, now = fleet
    out = askmod.ask("is anything offline right now?", path, model=None, record=None, now=now)
    assert out["template"] == "nodes_offline"
    assert out["answer"].startswith("Read as: offline nodes (nodes not heard from recently")
    out = askmod.ask("history of nginx.service on web1", path, model=None, record=None, now=now)
    assert out["answer"].startswith("Read as: a unit's history on web1 for nginx.service in the last month (")
    assert out["rows"] and out["alternatives"] == []
    out = askmod.ask("what did root run in the last hour", path, model=None, record=None, now=now)
    assert out["template"] == "commands_user"
    assert out["answer"].startswith("Read as: commands run by root in the last hour (")  # not "by a user by root"


def test_nothing_found_offers_two_readings_that_run_as_offered(fleet):
    path, now = fleet
    out = askmod.ask("who edited /etc/ssh/sshd_config this week?", path, model=None, record=None, now=now)
    assert out["rows"] == [] and len(out["alternatives"]) == 2, out
    assert "Other readings: " in out["answer"]
    for alt in out["alternatives"]:
        again = askmod.ask(alt, path, model=None, record=None, now=now)
        assert again["template"] != out["template"]
        assert again["reading"].startswith(alt)  # the suggestion is read back as itself
