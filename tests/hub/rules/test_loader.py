"""Rule files: every kind of bad input is refused at load with file, line and key."""

from __future__ import annotations

import textwrap

import pytest

from hub.rules.loader import RuleError, load_paths, load_text

GOOD = """\
rules:
  - name: ok
    event: {kind: log, where: {program: sshd}}
"""


def load(text: str):
    return load_text(textwrap.dedent(text), "bad.yaml")


@pytest.mark.parametrize("text,line,key,needle", [
    # invalid YAML
    ("rules:\n  - name: x\n    event: {kind: log\n", 4, "", "invalid YAML"),
    # unknown key, in a rule and in an event
    ("rules:\n  - name: x\n    severty: warning\n    event: {kind: log}\n", 3, "rules[0].severty", "unknown key 'severty'"),
    ("rules:\n  - name: x\n    event:\n      kind: log\n      wher: {}\n", 5, "rules[0].event.wher", "unknown key 'wher'"),
    # wrong types
    ("rules:\n  - name: x\n    event: {kind: log}\n    for: soon\n", 4, "rules[0].for", "does not match"),
    ("rules:\n  - name: x\n    event: {kind: log}\n    group_by: node\n", 4, "rules[0].group_by", "not of type 'array'"),
    ("rules:\n  - name: x\n    severity: loud\n    event: {kind: log}\n", 3, "rules[0].severity", "is not one of"),
    # bad regex, deep in a condition and in extract
    ("rules:\n  - name: x\n    event:\n      kind: log\n      where:\n        message: {regex: 'a(b'}\n", 6,
     "rules[0].event.where.message.regex", "bad regex"),
    ("rules:\n  - name: x\n    event:\n      kind: log\n      extract: {message: '(?P<a>x'}\n", 5,
     "rules[0].event.extract.message", "bad regex"),
    # SQL that writes, SQL that does not compile, two statements
    ("rules:\n  - name: x\n    query:\n      sql: DELETE FROM nodes\n", 4, "rules[0].query.sql", "single SELECT"),
    ("rules:\n  - name: x\n    query:\n      sql: \"WITH d AS (SELECT 1) DELETE FROM nodes\"\n", 4,
     "rules[0].query.sql", "may only read"),
    ("rules:\n  - name: x\n    query:\n      sql: SELECT nope FROM nodes\n", 4, "rules[0].query.sql", "no such column"),
    ("rules:\n  - name: x\n    query:\n      sql: SELECT 1; DROP TABLE nodes\n", 4, "rules[0].query.sql", "bad query"),
    # templates: syntax error and unknown field
    ("rules:\n  - name: x\n    event: {kind: log}\n    annotations:\n      summary: '{{ message '\n", 5,
     "rules[0].annotations.summary", "bad template"),
    ("rules:\n  - name: x\n    event: {kind: log}\n    annotations:\n      summary: '{{ adress }}'\n", 5,
     "rules[0].annotations.summary", "unknown field(s) adress"),
    ("rules:\n  - name: x\n    event: {kind: log}\n    propose:\n      - playbook: block-address\n"
     "        params: {address: '{{ addr }}'}\n", 6, "rules[0].propose[0].params.address", "unknown field(s) addr"),
    # structure: two sources, no source, unknown operator, unknown macro, duplicate names
    ("rules:\n  - name: x\n    event: {kind: log}\n    metric: load1\n", 2, "rules[0]", "exactly one of"),
    ("rules:\n  - name: x\n    severity: info\n", 2, "rules[0]", "exactly one of"),
    ("rules:\n  - name: x\n    event:\n      kind: log\n      where: {pid: {bigger: 3}}\n", 5,
     "rules[0].event.where.pid.bigger", "unknown operator"),
    ("rules:\n  - name: x\n    event:\n      kind: log\n      where: {macro: sshd}\n", 5,
     "rules[0].event.where.macro", "unknown macro"),
    ("rules:\n  - name: x\n    event: {kind: log}\n  - name: x\n    event: {kind: log}\n", 4,
     "rules[1].name", "duplicate rule name"),
    ("rules:\n  - name: x\n    name: y\n    event: {kind: log}\n", 3, "rules[0].name", "duplicate key"),
    ("rules:\n  - name: x\n    event: {kind: log}\n    aggregate: {fn: avg, window: 5m}\n", 4,
     "rules[0].aggregate", "needs a field"),
    # a misspelt field would silently never match: refused for kinds this hub knows
    ("rules:\n  - name: x\n    event:\n      kind: log\n      where: {programm: sshd}\n", 5,
     "rules[0].event.where.programm", "unknown field 'programm'"),
    ("rules:\n  - name: x\n    event: {kind: log}\n    group_by: [node, adress]\n", 4,
     "rules[0].group_by[1]", "cannot group by 'adress'"),
    ("rules:\n  - name: x\n    query: {sql: 'SELECT name AS node FROM nodes'}\n    group_by: [host]\n", 4,
     "rules[0].group_by[0]", "cannot group by 'host'"),
])
def test_errors_name_file_line_and_key(text, line, key, needle):
    with pytest.raises(RuleError) as e:
        load(text)
    err = e.value
    assert (err.file, err.line, err.key) == ("bad.yaml", line, key), str(err)
    assert needle in str(err)
    assert str(err).startswith(f"bad.yaml:{line}: ")


def test_future_kinds_are_not_checked():
    (r,) = load("rules:\n  - name: x\n    event: {kind: gpu_metrics, where: {util: {gt: 0.9}}}\n"
                "    annotations: {summary: '{{ util }}'}\n")
    assert r.kind == "gpu_metrics"


def test_good_rule_compiles():
    (r,) = load(GOOD)
    assert (r.name, r.source, r.kind, r.line) == ("ok", "event", "log", 2)


def test_bad_file_never_stops_good_ones(tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text("rules:\n  - name: b\n    event: {kind: log, where: {message: {regex: '['}}}\n")
    (tmp_path / "c.yaml").write_text(GOOD.replace("name: ok", "name: ok2"))
    (tmp_path / "d.yaml").write_text(GOOD)  # a second rule called ok: refused, named where the first is
    rules, errors = load_paths([tmp_path])
    assert sorted(r.name for r in rules) == ["ok", "ok2"]
    assert len(errors) == 2
    assert "b.yaml:3: rules[0].event.where.message.regex: bad regex" in str(errors[0])
    assert "d.yaml" in str(errors[1]) and "already defined at" in str(errors[1]) and "a.yaml:2" in str(errors[1])


def test_unknown_inhibitor_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD + "    inhibited_by: [{rule: ghost}]\n")
    rules, errors = load_paths([tmp_path])
    assert rules == [] and "unknown rule 'ghost'" in str(errors[0]) and "a.yaml:2" in str(errors[0])


def test_macro_cycle_refused():
    with pytest.raises(RuleError, match="refers to itself"):
        load("macros:\n  a: {macro: b}\n  b: {macro: a}\nrules:\n  - name: x\n    event: {kind: log, where: {macro: a}}\n")


def test_query_guard_refuses_writes_at_run_time_too(tmp_path):
    """The authorizer is the second lock: even on a writable connection nothing is written."""
    import sqlite3

    from hub.rules.conditions import run_query

    db = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    db.execute("CREATE TABLE t (x)")
    for sql in ("INSERT INTO t VALUES (1)", "DROP TABLE t", "ATTACH 'y.db' AS y", "PRAGMA writable_schema = 1"):
        with pytest.raises(PermissionError, match="may only read"):
            run_query(db, sql, {}, 1.0)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
    with pytest.raises(TimeoutError):
        run_query(db, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT count(*) FROM c",
                  {}, 0.2)


def test_rule_sql_reads_no_secrets(tmp_path):
    import sqlite3

    from hub.rules.conditions import run_query
    from hub.store import open_db

    db = open_db(tmp_path / "h.db")
    db.execute("INSERT INTO nodes (name, created, credential_hash) VALUES ('n1', 0, 'secret-hash')")
    db.execute("INSERT INTO join_tokens VALUES ('tok-hash', 'n1', 0, 9e9, NULL, NULL)")
    db.close()
    ro = sqlite3.connect(f"file:{tmp_path / 'h.db'}?mode=ro", uri=True)
    _, rows = run_query(ro, "SELECT name, credential_hash FROM nodes", {}, 2.0)
    assert rows == [("n1", None)]
    _, rows = run_query(ro, "SELECT token_hash FROM join_tokens", {}, 2.0)
    assert rows == [(None,)]
