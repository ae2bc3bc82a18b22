"""Deterministic guards before and after the model: never block our own addresses; a culprit the
evidence names is fixed before it is reported."""

from __future__ import annotations

import json
import time

import pytest
from brain_fakes import FakeModel

from agent import playbook
from hub.brain import guards, runtime
from hub.brain.propose import decide
from hub.paths import shipped
from hub.store import open_db


@pytest.fixture
def books():
    return playbook.load_dir(shipped("playbooks"))


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "homelab.db"
    c = open_db(path)
    c.execute("INSERT INTO nodes (name, created, address) VALUES ('nas', 0, '192.168.1.20')")
    c.execute("INSERT INTO nodes (name, created) VALUES ('web1', 0)")
    c.execute("INSERT INTO interfaces (node, name, addresses, seq) VALUES ('web1', 'eth0',"
              " '10.0.5.7/24 2001:db8:5::7/64', 1)")
    c.commit()
    runtime.configure(None, path, None)
    yield c
    c.close()
    runtime.configure(None, None, None)


@pytest.mark.parametrize(("address", "why"), [
    ("192.168.1.20", "enrolled node nas's address"), ("10.0.5.7", "enrolled node web1's address"),
    ("10.0.0.0/16", "enrolled node web1's address"), ("2001:db8:5::7", "enrolled node web1's address"),
    ("198.51.100.1", "the hub's own address"), ("127.0.0.53", "loopback"), ("::1", "loopback"),
    ("169.254.10.1", "link-local"), ("fe80::1", "link-local"), ("100.101.102.103", "the tailnet's range"),
    ("fd7a:115c:a1e0::42", "the tailnet's range"), ("100.64.0.0/10", "the tailnet's range"),
])
def test_block_of_our_own_is_refused(db, books, address, why):
    shield = guards.protected(db, own=["198.51.100.1", "fe80::abcd%eth0"])
    reason = guards.refuse("block-address", books["block-address"], {"address": address}, shield)
    assert reason and why in reason and address.split("/")[0] in reason


def test_strangers_may_be_blocked_and_other_playbooks_are_not_checked(db, books):
    shield = guards.protected(db, own=["198.51.100.1"])
    assert guards.refuse("block-address", books["block-address"], {"address": "203.0.113.9"}, shield) is None
    assert guards.refuse("block-address", books["block-address"], {"address": "10.1.0.0/16"}, shield) is None
    assert guards.refuse("restart-unit", books["restart-unit"], {"unit": "127.0.0.1"}, shield) is None
    assert "not an address" in guards.refuse("block-address", books["block-address"], {"address": "nas"}, shield)


def test_decide_refuses_the_rule_and_the_model(db, books):
    alert = {"id": 3, "rule": "ssh-brute-force", "node": "web1", "summary": "failed SSH logins from 192.168.1.20"}
    rows: list[dict] = []
    r = decide(alert, [{"playbook": "block-address", "params": {"address": "192.168.1.20"}}], books,
               model=None, db=db, record=rows.append)
    assert r["playbook"] is None and "enrolled node nas" in r["rationale"] and rows[0]["outcome"] == "refused"
    # the rule leaves the address open; the model fills in an enrolled node's address
    m = FakeModel({"playbook": "block-address", "params": {"address": "10.0.5.7"}, "rationale": "x", "evidence": []})
    cands = [{"playbook": "block-address", "params": {}}, {"playbook": "unit-logs", "params": {"unit": "ssh.service"}}]
    r = decide(alert, cands, books, model=m, db=db, record=rows.append)
    assert r["playbook"] == "unit-logs" and rows[-1]["outcome"].startswith("fallback: block-address refused")
    assert "enrolled node web1" in r["refused"][0]


def _event(db, node, kind, data, ts):
    db.execute("INSERT INTO events (node, seq, ts, kind, data) VALUES (?, ?, ?, ?, ?)",
               (node, int(ts * 1000) % 10**9, ts, kind, json.dumps(data)))
    db.commit()


@pytest.mark.parametrize(("message", "fix"), [
    ("System journal (/var/log/journal/4f1c) is 7.8G, max 8.0G, 200M free.", "journal-vacuum"),
    ("/tmp holds 9.1G in 41k files older than 30 days (build-cache-*)", "clean-tmp"),
])
def test_culprit_in_evidence_beats_a_report(db, books, message, fix):
    now = time.time()
    _event(db, "nas", "log", {"program": "du-watch", "message": message, "severity": 4}, now - 60)
    alert = {"id": 9, "rule": "disk-full", "node": "nas", "summary": "/ is 96% full on nas", "ts": now}
    cands = [{"playbook": "disk-report", "params": {}}, {"playbook": "journal-vacuum", "params": {}},
             {"playbook": "clean-tmp", "params": {"path": "/tmp"}}]
    rows: list[dict] = []
    r = decide(alert, cands, books, model=None, db=db, record=rows.append)
    assert r["playbook"] == fix and "culprit" in r["rationale"]
    m = FakeModel({"playbook": "disk-report", "params": {}, "rationale": "look first", "evidence": []})
    r = decide(alert, cands, books, model=m, db=db, record=rows.append, shortlist_ratio=0)
    assert r["playbook"] == fix and rows[-1]["outcome"].startswith("overridden: evidence names the culprit")
    offered = m.calls[0]["user"].split("CHOICES:")[1]
    assert offered.index(f"- {fix}:") < offered.index("- disk-report:")


def test_no_culprit_keeps_the_rules_order(db, books):
    alert = {"id": 10, "rule": "disk-full", "node": "nas", "summary": "/ is 96% full on nas", "ts": time.time()}
    cands = [{"playbook": "disk-report", "params": {}}, {"playbook": "journal-vacuum", "params": {}}]
    r = decide(alert, cands, books, model=None, db=db, record=[].append)
    assert r["playbook"] == "disk-report"


async def test_the_proposal_worker_refuses_it_on_the_audit_record(hub, monkeypatch):
    from tests.conftest import async_wait_for

    monkeypatch.setenv("HOMELAB_MODEL", "none")
    hub.enroll("nas")
    await hub.writer.run(lambda db: db.execute("UPDATE nodes SET address = '192.168.1.20' WHERE name = 'nas'"))
    alert = {"id": 5, "rule": "ssh-brute-force", "node": "nas", "summary": "failed SSH logins from 192.168.1.20"}
    cands = [{"playbook": "block-address", "params": {"address": "192.168.1.20", "duration": "1h"}}]
    await hub.writer.run(lambda db: db.execute(
        "INSERT INTO proposal_requests (ts, alert_id, rule, node, alert, candidates) VALUES (?, 5, 'ssh-brute-force',"
        " 'nas', ?, ?)", (time.time(), json.dumps(alert), json.dumps(cands))))
    await async_wait_for(lambda: hub.query("SELECT done FROM proposal_requests WHERE alert_id = 5")[0][0], 30,
                         what="the request to be handled")
    assert hub.query("SELECT count(*) FROM proposals")[0][0] == 0
    [(data,)] = hub.query("SELECT data FROM audit WHERE action = 'candidate refused'")
    assert "block-address refused: address=192.168.1.20/32 would block enrolled node nas's address" in \
        json.loads(data)["reason"]


def test_a_unit_active_again_is_not_restarted(db, books):
    now = time.time()
    alert = {"id": 11, "rule": "unit-failed", "node": "nas", "summary": "nginx.service failed", "first_seen": now - 90}
    cands = [{"playbook": "restart-unit", "params": {"unit": "nginx.service"}}]
    db.execute("INSERT INTO services (node, unit, active, changed, seq) VALUES ('nas', 'nginx.service', 'failed', ?, 1)",
               (now - 100,))
    db.commit()
    assert decide(alert, cands, books, model=None, db=db, record=[].append)["playbook"] == "restart-unit"
    db.execute("UPDATE services SET active = 'active', changed = ? WHERE unit = 'nginx.service'", (now - 10,))
    db.commit()
    rows: list[dict] = []
    r = decide(alert, cands, books, model=FakeModel("{}"), db=db, record=rows.append)
    assert r["playbook"] is None and "active again" in r["rationale"] and rows[0]["outcome"] == "refused"
