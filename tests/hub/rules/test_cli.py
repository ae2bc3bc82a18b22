"""homelab-hub rules check|test|list and homelab-hub alerts, as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from hub.rules import alerts as alert_store
from hub.store import open_db
from tests.conftest import ROOT


def hub(*args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "hub", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=env)


def test_shipped_rules_check_and_their_unit_tests_pass():
    r = hub("rules", "check", "rules/")
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr
    r = hub("rules", "test", "rules/")
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed, 0 error(s)" in r.stdout
    passed = int(r.stdout.strip().splitlines()[-1].split()[0])
    shipped = [p.name for p in (ROOT / "rules").glob("*.yaml")]
    assert passed >= len(shipped)  # every shipped file has at least one case
    assert sorted(p.name for p in (ROOT / "rules" / "tests").glob("*.yaml")) == sorted(shipped)


def test_check_names_file_line_key_and_fails(tmp_path):
    (tmp_path / "good.yaml").write_text("rules:\n  - name: g\n    event: {kind: log}\n")
    (tmp_path / "bad.yaml").write_text("rules:\n  - name: b\n    event: {kind: log}\n    throttel: 1h\n")
    r = hub("rules", "check", str(tmp_path))
    assert r.returncode == 1
    assert f"{tmp_path / 'bad.yaml'}:4: rules[0].throttel: unknown key 'throttel'" in r.stderr
    assert "1 rule(s) in 1 file(s) OK, 1 error(s)" in r.stdout


def test_rules_test_reports_a_failing_case(tmp_path):
    (tmp_path / "r.yaml").write_text("rules:\n  - name: boom\n    event: {kind: log, where: {message: boom}}\n"
                                     "    keep_firing_for: 1m\n")
    (tmp_path / "t.yaml").write_text(
        "rule_files: [r.yaml]\ntests:\n  - name: expects too much\n    input:\n"
        "      - {at: 0s, node: n, event: {kind: log, source: s, message: boom}}\n"
        "    expect:\n      - at: 10s\n        firing: [{rule: boom}, {rule: boom}]\n"
        "  - name: right\n    input:\n      - {at: 0s, node: n, event: {kind: log, source: s, message: boom}}\n"
        "    expect:\n      - {at: 10s, firing: [{rule: boom, labels: {node: n}}]}\n      - {at: 2m, firing: []}\n")
    r = hub("rules", "test", str(tmp_path / "t.yaml"))
    assert r.returncode == 1
    assert "FAIL" in r.stdout and "expects too much" in r.stdout and "expected firing alert" in r.stdout
    assert "1 passed, 1 failed" in r.stdout


def test_rules_test_bad_test_file_names_line(tmp_path):
    (tmp_path / "r.yaml").write_text("rules:\n  - name: x\n    event: {kind: log}\n")
    (tmp_path / "t.yaml").write_text("rule_files: [r.yaml]\ntests:\n  - name: t\n    input:\n"
                                     "      - {at: 0s, event: {kind: log, sorce: s, message: m}}\n")
    r = hub("rules", "test", str(tmp_path / "t.yaml"))
    assert r.returncode == 1 and f"{tmp_path / 't.yaml'}:5: tests[0].input[0].event: not a valid event" in r.stderr


def test_list_and_alerts(tmp_path):
    r = hub("rules", "list", "--json", "rules/")
    names = {json.loads(line)["name"] for line in r.stdout.splitlines()}
    assert {"ssh-brute-force", "disk-almost-full", "node-offline", "clock-drift", "restart-loop"} <= names
    data = tmp_path / "hub"
    db = open_db(data / "homelab.db")
    db.execute("BEGIN")
    rec = {"id": 7, "rule": "disk-almost-full", "key": ["nas", "/"], "node": "nas", "state": "firing",
           "severity": "warning", "value": 0.95, "first_seen": 100.0, "last_seen": 200.0, "count": 3,
           "pending_at": 100.0, "firing_at": 160.0, "resolved_at": None, "labels": {"mount": "/"},
           "annotations": {"summary": "/ on nas is 95% full"}, "propose": [], "fields": {"mount": "/"},
           "events": [], "transition": "firing"}
    alert_store.apply(db, [rec, {**rec, "id": 8, "state": "resolved", "transition": None}], [], {})
    db.execute("COMMIT")
    db.close()
    r = hub("alerts", "--data-dir", str(data), "--state", "firing", "--json")
    assert r.returncode == 0, r.stderr
    (a,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert (a["id"], a["rule"], a["state"], a["count"], a["summary"]) == (7, "disk-almost-full", "firing", 3,
                                                                        "/ on nas is 95% full")
    r = hub("alerts", "--data-dir", str(data), env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0 and "disk-almost-full" in r.stdout and "resolved" in r.stdout


BAD_EVERYWHERE = """\
rules:
  - name: a
    metric: load1
    when: {value: {gte: 1}}
    propose:
      - playbook: no-such-playbook
  - name: b
    metric: load1
    bogus: 1
  - name: c
    metric: load1
    propose:
      - playbook: restart-unit
        params: {unit: x.service, force: "yes"}
      - playbook: clean-tmp
        if_output: '(?P<dir>/tmp)'
  - name: d
    metric: load1
    when: {value: {gtx: 1}}
"""


def test_check_reports_every_error_unknown_playbooks_and_undeclared_parameters(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(BAD_EVERYWHERE)
    r = hub("rules", "check", str(f), "--data-dir", str(tmp_path / "hub"),
            env={k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")})
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert [line.split(": ", 3)[1:3] for line in lines] == [
        [f"{f}:6", "rules[0].propose[0].playbook"],
        [f"{f}:9", "rules[1].bogus"],
        [f"{f}:14", "rules[2].propose[0].params.force"],
        [f"{f}:16", "rules[2].propose[1].if_output"],
        [f"{f}:19", "rules[3].when.value.gtx"],
    ]
    assert "no such playbook 'no-such-playbook' (installed: apt-autoremove," in lines[0]
    assert "playbook 'restart-unit' has no parameter 'force' (it declares: unit)" in lines[2]
    assert "group 'dir' is not a parameter of 'clean-tmp' (it declares: age, path)" in lines[3]
    assert "0 rule(s) in 0 file(s) OK, 5 error(s)" in r.stdout
