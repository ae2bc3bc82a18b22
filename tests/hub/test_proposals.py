"""Proposals on a real SQLite file: the state machine, approvals bound to hash, parameters, node
and expiry, the run budget, signed jobs, results, verification and the audit chain."""

from __future__ import annotations

import base64
import json
import shutil
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import playbook as pbm
from agent import wire
from hub import audit
from hub.errors import BadRequest, Conflict
from hub.proposals import jobs as dispatch
from hub.proposals import state as proposals
from hub.store import open_db
from tests.conftest import ROOT

KEY = Ed25519PrivateKey.generate()


class World:
    def __init__(self, tmp_path):
        self.books_dir = tmp_path / "playbooks"
        shutil.copytree(ROOT / "playbooks", self.books_dir)
        self.db = open_db(tmp_path / "homelab.db")
        self.db.execute("INSERT INTO nodes (name, created) VALUES ('n1', 0), ('n2', 0)")
        self.now = 1_800_000_000.0

    def books(self):
        return pbm.load_dir(self.books_dir)

    def tx(self, fn, *a, **kw):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            out = fn(self.db, *a, **kw)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return out

    def propose(self, playbook="clean-tmp", params=None, node="n1", rule="tmp-growing", alert_id=None, **kw):
        pb = self.books()[playbook]
        params = params if params is not None else {"path": "/tmp/x", "age": "1d"}
        return self.tx(proposals.create, node=node, pb=pb, params=params, rule=rule, alert_id=alert_id,
                       why="test", now=self.now, **kw)

    def approve(self, pid, **kw):
        p = proposals.get(self.db, pid)
        kw.setdefault("now", self.now)
        return self.tx(proposals.approve, pid, "alice", self.books().get(p["playbook"]), **kw)

    def dispatch(self, budget=3, now=None):
        return self.tx(dispatch.dispatch_approved, self.books(), KEY, budget, now or self.now)

    def result(self, node, job_id, status, exit_code=None, output="", now=None, window=300.0):
        ev = wire.JobResult(ts=self.now, job_id=job_id, playbook="x", status=status, exit_code=exit_code, output=output)
        return self.tx(dispatch.record_result, node, ev, self.books(), KEY, window, now or self.now)

    def state(self, pid):
        return proposals.get(self.db, pid)["state"]


@pytest.fixture
def w(tmp_path):
    world = World(tmp_path)
    yield world
    world.db.close()


def job_of(w, job_id):
    row = w.db.execute("SELECT payload, signature, mode, state FROM jobs WHERE id = ?", (job_id,)).fetchone()
    KEY.public_key().verify(base64.b64decode(row[1]), row[0].encode())  # raises if not signed by the hub
    return json.loads(row[0]), row[2], row[3]


def test_happy_path_through_every_state(w):
    pid = w.propose()
    assert w.state(pid) == "proposed"
    w.approve(pid)
    assert w.state(pid) == "approved"
    [(got_pid, job_id)] = w.dispatch()
    assert got_pid == pid and w.state(pid) == "dispatched"
    job, mode, _ = job_of(w, job_id)
    pb = w.books()["clean-tmp"]
    assert (mode, job["node"], job["playbook"], job["sha256"], job["params"]) == (
        "run", "n1", "clean-tmp", pb.sha256, {"path": "/tmp/x", "age": "86400"})
    assert job["expires"] == w.now + 3600
    w.result("n1", job_id, "running")
    assert w.state(pid) == "running"
    w.result("n1", job_id, "succeeded", 0, "deleted 3 file(s)")
    p = proposals.get(w.db, pid)
    assert p["state"] == "succeeded" and p["output"] == "deleted 3 file(s)"
    vjob, vmode, _ = job_of(w, p["verify_job_id"])
    assert vmode == "verify" and vjob["mode"] == "verify"
    w.result("n1", p["verify_job_id"], "succeeded", 0, "0 file(s) left")
    w.tx(dispatch.settle, w.now)
    assert w.state(pid) == "verified"
    steps = [(h["from"], h["to"], h["actor"]) for h in proposals.history(w.db, pid)]
    assert steps == [(None, "proposed", "hub"), ("proposed", "approved", "alice"), ("approved", "dispatched", "hub"),
                     ("dispatched", "running", "node:n1"), ("running", "succeeded", "node:n1"),
                     ("succeeded", "verified", "hub")]
    v = audit.verify(w.db)
    assert v.ok and v.rows >= 8
    actions = [r[0] for r in w.db.execute("SELECT action FROM audit ORDER BY id")]
    assert actions[0] == "proposed" and "approved" in actions and "job run succeeded" in actions


def test_results_from_another_node_and_replays_are_ignored(w):
    pid = w.propose()
    w.approve(pid)
    [(_, job_id)] = w.dispatch()
    assert w.result("n2", job_id, "succeeded", 0) is None
    assert w.state(pid) == "dispatched"
    w.result("n1", job_id, "failed", 3, "boom")
    assert w.state(pid) == "failed"
    assert w.result("n1", job_id, "succeeded", 0) is None  # a final job never changes again
    assert w.state(pid) == "failed"


def test_illegal_transitions_are_refused(w):
    pid = w.propose()
    with pytest.raises(BadRequest, match="needs a reason"):
        w.tx(proposals.reject, pid, "bob", "  ")
    w.approve(pid)
    with pytest.raises(Conflict, match="only a proposed one can be approved"):
        w.approve(pid)
    with pytest.raises(Conflict, match="already approved"):
        w.tx(proposals.reject, pid, "bob", "changed my mind")
    other = w.propose(rule="r2")
    w.tx(proposals.reject, other, "bob", "not now", now=w.now)
    assert proposals.get(w.db, other)["reason"] == "not now"
    with pytest.raises(Conflict, match="rejected; it cannot become approved|only a proposed"):
        w.approve(other)


def test_hub_revalidates_params_when_proposing(w):
    with pytest.raises(ValueError, match="does not match"):
        w.propose(params={"path": "/etc", "age": "1d"})
    with pytest.raises(ValueError, match="does not match the pattern"):
        w.propose(playbook="restart-container", params={"container": "x; reboot"})
    assert w.db.execute("SELECT count(*) FROM proposals").fetchone()[0] == 0


def test_script_changed_before_approval_cannot_be_approved(w):
    pid = w.propose()
    with open(w.books_dir / "clean-tmp.sh", "a") as f:
        f.write("\n# edited\n")
    with pytest.raises(Conflict, match="changed since proposal"):
        w.approve(pid)
    assert w.state(pid) == "proposed"


def test_script_changed_after_approval_is_not_dispatched(w):
    pid = w.propose()
    w.approve(pid)
    with open(w.books_dir / "clean-tmp.sh", "a") as f:
        f.write("\nrm -rf /  # evil edit\n")
    assert w.dispatch() == []
    p = proposals.get(w.db, pid)
    assert p["state"] == "failed" and "changed after approval" in p["reason"]
    assert w.db.execute("SELECT count(*) FROM jobs WHERE mode = 'run'").fetchone()[0] == 0


@pytest.mark.parametrize("column,value,needle", [
    ("params", '{"age":"60","path":"/tmp"}', "parameters differ"),
    ("node", "n2", "node differs"),
])
def test_approval_bound_to_params_and_node(w, column, value, needle):
    pid = w.propose()
    w.approve(pid)
    w.tx(lambda db: db.execute(f"UPDATE proposals SET {column} = ? WHERE id = ?", (value, pid)))
    assert w.dispatch() == []
    p = proposals.get(w.db, pid)
    assert p["state"] == "failed" and needle in p["reason"]


@pytest.mark.parametrize("sql,needle", [
    # both the value and its approval copy edited: the audit trail still says what was approved
    ("UPDATE proposals SET params = ?, approval_params = ? WHERE id = ?", "approval_params differs"),
    ("UPDATE proposals SET approval_expires = approval_expires + 86400 WHERE id = ?", "approval_expires differs"),
])
def test_row_edits_after_approval_are_caught_by_the_audit_record(w, sql, needle):
    pid = w.propose()
    w.approve(pid)
    evil = '{"age":"60","path":"/tmp"}'
    args = (evil, evil, pid) if sql.count("?") == 3 else (pid,)
    w.tx(lambda db: db.execute(sql, args))
    assert w.dispatch() == []
    p = proposals.get(w.db, pid)
    assert p["state"] == "failed" and needle in p["reason"]


def test_hostile_params_planted_in_the_database_cannot_be_approved(w):
    pid = w.propose()
    w.tx(lambda db: db.execute("UPDATE proposals SET params = ? WHERE id = ?", ('{"path":"/tmp/$(reboot)"}', pid)))
    with pytest.raises(BadRequest, match="only letters"):
        w.approve(pid)
    assert w.state(pid) == "proposed"


def test_approval_and_proposal_expire(w):
    pid = w.propose()
    w.approve(pid, ttl=60)
    assert w.dispatch(now=w.now + 61) == []
    assert w.state(pid) == "expired"
    late = w.propose(ttl=100)
    r = w.tx(proposals.approve, late, "alice", w.books()["clean-tmp"], now=w.now + 101)
    assert r["state"] == w.state(late) == "expired" and r["approved_by"] is None
    stale = w.propose(ttl=100)
    assert stale in w.tx(proposals.expire_due, w.now + 200)
    assert w.state(stale) == "expired"


def test_destructive_needs_the_node_name(w):
    text = (w.books_dir / "apt-autoremove.sh").read_text().replace("risk: change", "risk: destructive")
    (w.books_dir / "apt-autoremove.sh").write_text(text)
    pid = w.propose(playbook="apt-autoremove", params={})
    with pytest.raises(BadRequest, match="typing the node name 'n1'"):
        w.approve(pid)
    with pytest.raises(BadRequest):
        w.approve(pid, confirm_node="n2")
    w.approve(pid, confirm_node="n1")
    assert w.state(pid) == "approved"


def test_run_budget_escalates_instead_of_looping(w):
    for i in range(3):
        pid = w.propose(params={"path": f"/tmp/{i}", "age": "1d"})
        w.approve(pid)
        w.dispatch(now=w.now + i)
        assert w.state(pid) == "dispatched"
    fourth = w.propose(params={"path": "/tmp/4", "age": "1d"})
    p = proposals.get(w.db, fourth)
    assert p["state"] == "escalated" and "budget" in p["reason"]
    with pytest.raises(Conflict, match="escalated; only a proposed one"):
        w.approve(fourth)
    # budget used up between proposing and approving: the approval escalates instead
    fifth_pb = w.books()["clean-tmp"]
    fifth = w.tx(lambda db: db.execute(
        "INSERT INTO proposals (created, updated, state, node, rule, playbook, sha256, risk, params, expires)"
        " VALUES (?, ?, 'proposed', 'n1', 'tmp-growing', 'clean-tmp', ?, 'change', ?, ?)",
        (w.now, w.now, fifth_pb.sha256, '{"age":"86400","path":"/tmp/5"}', w.now + 999)).lastrowid)
    r = w.approve(fifth)
    assert r["state"] == "escalated" and r["approved_by"] is None
    # another node, or another rule, has its own budget; read-only diagnostics never count
    assert w.state(w.propose(node="n2")) == "proposed"
    assert w.state(w.propose(rule="other")) == "proposed"
    # an hour later the budget is back
    w.now += 3700
    assert w.state(w.propose(params={"path": "/tmp/5", "age": "1d"})) == "proposed"


def test_budget_also_checked_at_dispatch(w):
    pids = [w.propose(params={"path": f"/tmp/{i}", "age": "1d"}) for i in range(4)]
    for pid in pids:
        w.approve(pid)
    w.dispatch()
    assert [w.state(p) for p in pids] == ["dispatched"] * 3 + ["escalated"]


def test_not_verified_when_verify_step_fails(w):
    pid = w.propose()
    w.approve(pid)
    [(_, job_id)] = w.dispatch()
    w.result("n1", job_id, "succeeded", 0)
    vid = proposals.get(w.db, pid)["verify_job_id"]
    w.result("n1", vid, "failed", 1, "2 file(s) left")
    p = proposals.get(w.db, pid)
    assert p["state"] == "not verified" and "verify step failed" in p["reason"]


def insert_alert(w, state):
    w.tx(lambda db: db.execute(
        "INSERT INTO alerts (id, rule, key, node, state, severity, first_seen, last_seen) VALUES (7, 'tmp-growing', '[]', 'n1', ?, 'warning', 0, 0)",
        (state,)))


def test_verified_only_when_the_alert_resolves(w):
    insert_alert(w, "firing")
    pid = w.propose(alert_id=7)
    w.approve(pid)
    [(_, job_id)] = w.dispatch()
    w.result("n1", job_id, "succeeded", 0)
    w.result("n1", proposals.get(w.db, pid)["verify_job_id"], "succeeded", 0, window=300)
    w.tx(dispatch.settle, w.now + 10)
    assert w.state(pid) == "succeeded"  # still waiting for the alert
    w.tx(dispatch.settle, w.now + 301)
    p = proposals.get(w.db, pid)
    assert p["state"] == "not verified" and "still firing" in p["reason"]


def test_resolved_alert_verifies(w):
    insert_alert(w, "firing")
    pid = w.propose(alert_id=7)
    w.approve(pid)
    [(_, job_id)] = w.dispatch()
    w.result("n1", job_id, "succeeded", 0)
    w.result("n1", proposals.get(w.db, pid)["verify_job_id"], "succeeded", 0)
    w.tx(lambda db: db.execute("UPDATE alerts SET state = 'resolved' WHERE id = 7"))
    w.tx(dispatch.settle, w.now + 10)
    assert w.state(pid) == "verified"


def test_undelivered_run_job_fails_at_expiry(w):
    pid = w.propose()
    w.approve(pid, ttl=60)
    w.dispatch()
    w.tx(dispatch.expire_jobs, w.now + 61)
    assert w.state(pid) == "failed"


def test_run_whose_node_died_mid_run_fails_after_the_longest_timeout(w):
    pid = w.propose()
    w.approve(pid)
    [(_, job_id)] = w.dispatch()
    w.result("n1", job_id, "running")  # then the node is killed and never reports
    job, _, _ = job_of(w, job_id)
    w.tx(dispatch.expire_jobs, job["expires"] + 60)
    assert w.state(pid) == "running"  # a long playbook may still be running
    w.tx(dispatch.expire_jobs, job["expires"] + pbm.MAX_TIMEOUT + 1)
    assert w.state(pid) == "failed"


def test_verify_step_that_never_runs_is_not_verified(w):
    pid = w.propose()
    w.approve(pid)
    [(_, job_id)] = w.dispatch()
    w.result("n1", job_id, "succeeded", 0)
    w.tx(dispatch.expire_jobs, w.now + dispatch.PROBE_TTL - 1)
    assert w.state(pid) == "succeeded"
    w.tx(dispatch.expire_jobs, w.now + dispatch.PROBE_TTL + 1)
    p = proposals.get(w.db, pid)
    assert p["state"] == "not verified" and "did not run" in p["reason"]


def test_pending_jobs_are_per_node(w):
    pid = w.propose()
    w.approve(pid)
    w.dispatch()
    assert len(dispatch.pending(w.db, "n1", w.now)) == 1
    assert dispatch.pending(w.db, "n2", w.now) == []
    w.tx(dispatch.mark_delivered, "n2", [dispatch.pending(w.db, "n1", w.now)[0]["id"]], w.now)
    assert len(dispatch.pending(w.db, "n1", w.now)) == 1  # n2 cannot take n1's job
    w.tx(dispatch.mark_delivered, "n1", [dispatch.pending(w.db, "n1", w.now)[0]["id"]], w.now)
    assert dispatch.pending(w.db, "n1", w.now) == []


# --- audit chain ---------------------------------------------------------------------------


def chain(w, n=5):
    for i in range(n):
        w.tx(audit.append, "tester", f"action {i}", None, {"i": i})
    assert audit.verify(w.db).ok


def test_audit_is_append_only(w):
    chain(w)
    with pytest.raises(Exception, match="append-only"):
        w.tx(lambda db: db.execute("UPDATE audit SET actor = 'mallory' WHERE id = 2"))
    with pytest.raises(Exception, match="append-only"):
        w.tx(lambda db: db.execute("DELETE FROM audit WHERE id = 2"))
    assert audit.verify(w.db).ok


@pytest.mark.parametrize("tamper,bad_id,needle", [
    ("UPDATE audit SET actor = 'mallory' WHERE id = 3", 3, "altered"),
    ("UPDATE audit SET data = '{\"i\":99}' WHERE id = 2", 2, "altered"),
    ("DELETE FROM audit WHERE id = 3", 3, "missing"),
    ("UPDATE audit SET ts = ts + 1 WHERE id = 1", 1, "altered"),
])
def test_audit_tampering_is_detected(w, tamper, bad_id, needle):
    chain(w)
    w.db.execute("DROP TRIGGER audit_no_update")
    w.db.execute("DROP TRIGGER audit_no_delete")
    w.tx(lambda db: db.execute(tamper))
    v = audit.verify(w.db)
    assert not v.ok and v.bad_id == bad_id and needle in v.problem, v


def test_audit_rehashing_one_row_breaks_the_next(w):
    chain(w)
    w.db.execute("DROP TRIGGER audit_no_update")
    row = w.db.execute("SELECT id, ts, actor, action, proposal_id, data, prev_hash FROM audit WHERE id = 2").fetchone()
    forged = audit.row_hash(row[6], row[0], row[1], "mallory", row[3], row[4], row[5])
    w.tx(lambda db: db.execute("UPDATE audit SET actor = 'mallory', hash = ? WHERE id = 2", (forged,)))
    v = audit.verify(w.db)
    assert not v.ok and v.bad_id == 3 and "does not follow" in v.problem


def test_record_request_only_for_firing_alerts_with_candidates(w):
    alert = {"id": 3, "node": "n1", "rule": object(), "rule_name": "r", "transition": "firing",
             "propose": [{"playbook": "disk-report", "params": {"path": "/"}, "auto": True}]}
    assert w.tx(proposals.record_request, {**alert, "transition": "pending"}) is None
    assert w.tx(proposals.record_request, {**alert, "propose": []}) is None
    rid = w.tx(proposals.record_request, alert)
    row = w.db.execute("SELECT rule, node, alert_id, candidates FROM proposal_requests WHERE id = ?", (rid,)).fetchone()
    assert tuple(row)[:3] == ("r", "n1", 3) and json.loads(row[3])[0]["playbook"] == "disk-report"
    assert time.time() > 0
