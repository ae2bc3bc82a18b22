"""Standing approvals on a real SQLite file: matching, bounds, rate, window, the script's hash,
the audit trail, and suspension after two unverified runs in a row (issue 19, item 9)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from test_proposal_worker import join, no_brain, poll, report, rows, send  # noqa: F401 - no_brain: fixture
from test_proposals import World

from agent import playbook as pbm
from agent import wire
from hub import audit
from hub.errors import BadRequest
from hub.proposals import jobs as dispatch
from hub.proposals import policies
from hub.proposals import state as proposals
from hub.store import open_db
from tests.conftest import ROOT, async_wait_for


@pytest.fixture
def w(tmp_path):
    world = World(tmp_path)
    yield world
    world.db.close()


def add(w, playbook="clean-tmp", nodes=("n1",), bounds=None, max_risk="change", rate=(5, 3600.0), window=None):
    bounds = bounds if bounds is not None else {"path": {"regex": "/tmp/.*"}, "age": {"min": 3600, "max": 7 * 86400}}
    return w.tx(policies.add, pb=w.books()[playbook], nodes=list(nodes), bounds=bounds, max_risk=max_risk,
                rate=rate, window=window, actor="alice", now=w.now)


def apply(w, now=None):
    return w.tx(policies.apply, w.books(), now or w.now, approval_ttl=3600.0, budget=10)


def run(w, pid, status="succeeded", verify="succeeded"):
    [(_, job_id)] = [x for x in w.dispatch(budget=10) if x[0] == pid]
    w.result("n1", job_id, status, 0 if status == "succeeded" else 1, "out")
    if status == "succeeded":
        w.result("n1", proposals.get(w.db, pid)["verify_job_id"], verify, 0 if verify == "succeeded" else 1)
        w.tx(dispatch.settle, w.now + 1)
    return w.tx(policies.settle, w.now + 2)


def test_a_matching_proposal_is_approved_by_the_policy_and_audited_with_its_id(w):
    pol = add(w)
    pid = w.propose(params={"path": "/tmp/cache", "age": "1d"})
    assert apply(w) == [(pid, pol)]
    p = proposals.get(w.db, pid)
    assert (p["state"], p["approved_by"]) == ("approved", f"policy:{pol}")
    rec = w.db.execute("SELECT actor, data FROM audit WHERE proposal_id = ? AND action = 'approved'", (pid,)).fetchone()
    assert rec[0] == f"policy:{pol}" and json.loads(rec[1])["approval_sha256"] == p["sha256"]
    assert tuple(w.db.execute("SELECT actor FROM audit WHERE action = 'policy added'").fetchone()) == ("alice",)
    run(w, pid)
    assert w.state(pid) == "verified"
    assert tuple(w.db.execute("SELECT outcome FROM policy_runs WHERE proposal_id = ?", (pid,)).fetchone()) == ("verified",)
    assert audit.verify(w.db).ok


@pytest.mark.parametrize("params,node,needle", [
    ({"path": "/var/tmp/x", "age": "1d"}, "n1", "outside the policy's bound"),  # regex is the whole value
    ({"path": "/tmp/x", "age": "60"}, "n1", "age='60' is outside"),  # below MIN
    ({"path": "/tmp/x", "age": "1d"}, "n2", "node 'n2' is not in the policy"),
])
def test_a_proposal_outside_the_bounds_waits_for_a_person(w, params, node, needle):
    pol = add(w)
    pid = w.propose(params=params, node=node)
    assert apply(w) == []
    assert w.state(pid) == "proposed"
    p = proposals.get(w.db, pid)
    assert needle in policies.mismatch(policies.get(w.db, pol), p, w.now, 0)


def test_rate_window_and_a_changed_script(w):
    pol = add(w, rate=(1, 3600.0))
    a, b = w.propose(params={"path": "/tmp/a", "age": "1d"}), w.propose(params={"path": "/tmp/b", "age": "1d"})
    assert apply(w) == [(a, pol)]  # the rate allows one per hour
    assert w.state(b) == "proposed"
    assert apply(w, w.now + 3601) == [(b, pol)]
    # a window that is closed now
    hour = time.localtime(w.now).tm_hour
    closed = policies.parse_window(f"{(hour + 2) % 24:02d}:00-{(hour + 3) % 24:02d}:00")
    add(w, nodes=("n2",), window=closed)
    c = w.propose(params={"path": "/tmp/c", "age": "1d"}, node="n2")
    assert apply(w) == [] and w.state(c) == "proposed"
    assert policies.in_window(policies.parse_window(f"{hour:02d}:00-{(hour + 1) % 24:02d}:00"), w.now)
    # the script changed after the policy was approved: not covered
    (w.books_dir / "clean-tmp.sh").write_text((w.books_dir / "clean-tmp.sh").read_text() + "\n# changed\n")
    d = w.propose(params={"path": "/tmp/d", "age": "1d"})
    assert apply(w, w.now + 7200) == [] and w.state(d) == "proposed"


def test_two_unverified_runs_in_a_row_suspend_the_policy_and_say_so(w, caplog):
    pol = add(w)
    first = w.propose(params={"path": "/tmp/a", "age": "1d"})
    apply(w)
    assert run(w, first, verify="failed") == []
    assert policies.get(w.db, pol)["failures"] == 1
    ok = w.propose(params={"path": "/tmp/b", "age": "1d"})
    apply(w)
    run(w, ok)
    assert policies.get(w.db, pol)["failures"] == 0  # a verified run resets the count
    for path, status in (("/tmp/c", "failed"), ("/tmp/d", "succeeded")):
        pid = w.propose(params={"path": path, "age": "1d"}, budget=10)  # (the run budget is not under test)
        assert apply(w) == [(pid, pol)]
        with caplog.at_level(logging.WARNING, logger="hub.proposals.policies"):
            suspended = run(w, pid, status=status, verify="failed")
    assert suspended == [pol]
    p = policies.get(w.db, pol)
    assert p["state"] == "suspended" and "2 runs in a row did not verify" in p["reason"]
    assert f"policy {pol} (clean-tmp on n1) suspended" in caplog.text
    row = w.db.execute("SELECT actor, data FROM audit WHERE action = 'policy suspended'").fetchone()
    assert row[0] == "hub" and json.loads(row[1])["policy"] == pol
    # nothing more runs under it
    e = w.propose(params={"path": "/tmp/e", "age": "1d"}, budget=10)
    assert apply(w) == [] and w.state(e) == "proposed"
    assert audit.verify(w.db).ok


def test_revoked_policies_approve_nothing(w):
    pol = add(w)
    w.tx(policies.revoke, pol, "alice", "no longer wanted")
    pid = w.propose(params={"path": "/tmp/a", "age": "1d"})
    assert apply(w) == [] and w.state(pid) == "proposed"
    with pytest.raises(BadRequest, match="needs a reason"):
        w.tx(policies.revoke, pol, "alice", " ")


@pytest.mark.parametrize("kw,needle", [
    ({"max_risk": "destructive"}, "at most read-only or change"),
    ({"max_risk": "read-only"}, "is change, above the policy's highest risk 'read-only'"),
    ({"bounds": {"path": {"any": True}}}, "no bound for parameter(s) age of 'clean-tmp'"),
    ({"bounds": {"path": {"any": True}, "age": {"any": True}, "force": {"eq": "1"}}}, "has no parameter 'force'"),
    ({"nodes": ()}, "at least one --node"),
])
def test_bad_policies_are_refused_with_the_reason(w, kw, needle):
    with pytest.raises(BadRequest) as e:
        add(w, **kw)
    assert needle in str(e.value)


@pytest.mark.parametrize("fn,spec,needle", [
    (policies.parse_bound, "age", "use NAME=VALUE"),
    (policies.parse_bound, "age=9..1", "9 is above 1"),
    (policies.parse_bound, "path=~(", "bad --param"),
    (policies.parse_rate, "often", "use RUNS/PERIOD"),
    (policies.parse_rate, "0/1h", "at least one run"),
    (policies.parse_window, "02:00-25:00", "times 00:00 to 23:59"),
    (policies.parse_window, "someday 02:00-03:00", "days are mon"),
])
def test_bad_bounds_rates_and_windows(fn, spec, needle):
    with pytest.raises(BadRequest) as e:
        fn(spec)
    assert needle in str(e.value)


def test_a_window_across_midnight():
    win = policies.parse_window("sat 23:00-02:00")
    sat_2330 = time.mktime((2026, 12, 12, 23, 30, 0, 0, 0, -1))  # a Saturday
    assert policies.in_window(win, sat_2330)
    assert policies.in_window(win, sat_2330 + 2 * 3600)  # Sunday 01:30: Saturday's window
    assert not policies.in_window(win, sat_2330 + 3 * 3600)
    assert not policies.in_window(win, sat_2330 - 86400 + 2 * 3600)  # Saturday 01:30: Friday's



# --- the whole loop on a live hub: the shipped unit-failed rule under a standing policy ---------


async def test_failed_unit_restarted_under_a_policy_with_no_prompt_and_verified(hub, no_brain):  # noqa: F811
    """The node's side is played over HTTP (the systemd-node version with a real agent is the
    node lab's); the hub, its shipped rule, the proposal worker and the policy are real."""
    cred, _ = await join(hub, "web1")
    db = open_db(hub.data_dir / "homelab.db")
    db.execute("BEGIN IMMEDIATE")
    pol = policies.add(db, pb=pbm.load_dir(ROOT / "playbooks")["restart-unit"], nodes=["web1"],
                       bounds={"unit": {"regex": r"nginx\.service"}}, max_risk="change", rate=(2, 3600.0),
                       window=None, actor="alice")
    db.execute("COMMIT")
    db.close()

    await send(hub, cred, "web1", wire.Service(ts=time.time(), unit="nginx.service", active="failed",
                                               previous="active"))
    # round one: the diagnostic runs by itself and ends diagnosed
    await async_wait_for(lambda: rows(hub, "SELECT playbook, state FROM proposals") == [("unit-logs", "dispatched")],
                         20, what="the diagnostic")
    [diag] = [json.loads(j["payload"]) for j in (await poll(hub, cred))[1]["jobs"]]
    await report(hub, cred, "web1", diag, "succeeded", 0, "nginx: bind() to 0.0.0.0:80 failed (98: in use)")
    # round two: restart-unit, approved by the policy with nobody asked
    await async_wait_for(lambda: rows(hub, "SELECT approved_by FROM proposals WHERE playbook = 'restart-unit'")
                         == [(f"policy:{pol}",)], 20, what="the policy's approval")
    jobs = []
    for _ in range(20):
        jobs += [json.loads(j["payload"]) for j in (await poll(hub, cred, wait=1))[1]["jobs"]]
        if any(j["mode"] == "run" for j in jobs):
            break
    [run] = [j for j in jobs if j["mode"] == "run"]
    assert (run["playbook"], run["params"]) == ("restart-unit", {"unit": "nginx.service"})
    await report(hub, cred, "web1", run, "succeeded", 0, "restarted")
    verify = None
    for _ in range(20):
        verify = next((json.loads(j["payload"]) for j in (await poll(hub, cred, wait=1))[1]["jobs"]
                       if json.loads(j["payload"])["mode"] == "verify"), None)
        if verify:
            break
    assert verify is not None
    await report(hub, cred, "web1", verify, "succeeded", 0, "")
    await asyncio.sleep(1.5)
    assert rows(hub, "SELECT state FROM proposals WHERE playbook = 'restart-unit'") == [("succeeded",)]
    # the unit is back: the rule's own condition cleared on fresh data
    await send(hub, cred, "web1", wire.Service(ts=time.time(), unit="nginx.service", active="active",
                                               previous="failed"))
    await async_wait_for(lambda: rows(hub, "SELECT state FROM proposals WHERE playbook = 'restart-unit'")
                         == [("verified",)], 20, what="verified")
    pid = rows(hub, "SELECT id FROM proposals WHERE playbook = 'restart-unit'")[0][0]
    assert rows(hub, "SELECT actor FROM audit WHERE proposal_id = ? AND action = 'approved'", (pid,)) == \
        [(f"policy:{pol}",)]
    assert rows(hub, "SELECT outcome FROM policy_runs WHERE proposal_id = ?", (pid,)) == [("verified",)]
    assert any(isinstance(e, dict) and "bind() to 0.0.0.0:80" in e.get("output", "")
               for e in json.loads(rows(hub, "SELECT evidence FROM proposals WHERE id = ?", (pid,))[0][0]))
