"""Verification asks the rule's own condition on data newer than the fix, not the alert: an
alert held open by ``keep_firing_for`` must not turn a fix that worked into "not verified"
(issue 19, item 2). Real engine, real rules, real SQLite; only the clock is chosen."""

from __future__ import annotations

import pytest
from test_proposals import World, insert_alert

from agent import wire
from hub.proposals import jobs as dispatch
from hub.proposals import state as proposals
from hub.rules.engine import Engine
from hub.rules.loader import load_text

BRUTE = """
rules:
  - name: tmp-growing
    event:
      kind: log
      where: {program: sshd}
      extract: {message: '^Failed password from (?P<address>\\S+)$'}
    aggregate: {fn: count, window: 2m}
    when: {value: {gte: 3}}
    group_by: [node, address]
    keep_firing_for: 30m
"""
FULL = """
rules:
  - name: tmp-growing
    metric: disk_used_ratio
    when: {value: {gte: 0.9}}
    group_by: [node, mount]
    keep_firing_for: 10m
"""


@pytest.fixture
def w(tmp_path):
    world = World(tmp_path)
    yield world
    world.db.close()


def fixed(w, alert_id=7):
    """A clean-tmp fix for alert 7 that ran and whose verify step passed, at w.now."""
    insert_alert(w, "firing")
    pid = w.propose(alert_id=alert_id)
    w.approve(pid)
    [(_, job_id)] = w.dispatch()
    w.result("n1", job_id, "succeeded", 0)
    w.result("n1", proposals.get(w.db, pid)["verify_job_id"], "succeeded", 0, window=300)
    return pid


def login(t):
    return wire.Log(ts=t, source="journal", program="sshd", message="Failed password from 203.0.113.9")


def brute_engine(w):
    eng = Engine(load_text(BRUTE, "b.yaml"), next_id=7)
    for k in range(4):  # the attack before the fix: firing
        eng.feed("n1", k + 1, login(w.now - 60 + k), w.now - 60 + k)
    eng.tick(w.now - 50)
    assert [i.state for i in eng.instances.values()] == ["firing"]
    return eng


def test_a_windowed_rule_is_verified_on_a_whole_fresh_window_while_its_alert_is_held(w):
    eng = brute_engine(w)
    pid = fixed(w)
    w.tx(dispatch.settle, w.now + 30, eng.verdict)
    assert w.state(pid) == "succeeded"  # half a window of fresh data proves nothing yet
    deadline = proposals.get(w.db, pid)["verify_deadline"]
    assert deadline >= w.now + 120  # a whole window (2m) of fresh data, then a verdict
    eng.tick(w.now + 125)
    w.tx(dispatch.settle, w.now + 125, eng.verdict)
    p = proposals.get(w.db, pid)
    assert [i.state for i in eng.instances.values()] == ["firing"]  # held by keep_firing_for
    assert p["state"] == "verified"
    assert proposals.history(w.db, pid)[-1]["note"] == "the rule's condition cleared on data since the fix"


def test_a_windowed_rule_whose_condition_still_holds_is_not_verified(w):
    eng = brute_engine(w)
    pid = fixed(w)
    for k in range(5):  # the block did not work: the attack goes on
        eng.feed("n1", 10 + k, login(w.now + 10 + k * 20), w.now + 10 + k * 20)
    eng.tick(w.now + 130)
    w.tx(dispatch.settle, w.now + 130, eng.verdict)
    assert w.state(pid) == "succeeded"  # it may still clear before the window closes
    w.tx(dispatch.settle, w.now + 301, eng.verdict)
    p = proposals.get(w.db, pid)
    assert p["state"] == "not verified"
    assert p["reason"] == "the rule's condition still holds on data since the fix (alert firing)"


def disk(t, v):
    return wire.Metrics(ts=t, samples={'disk_used_ratio{mount="/"}': v})


def test_a_threshold_rule_is_verified_by_the_first_fresh_sample_below_it(w):
    eng = Engine(load_text(FULL, "f.yaml"), next_id=7)
    eng.feed("n1", 1, disk(w.now - 30, 0.95), w.now - 30)
    pid = fixed(w)
    w.tx(dispatch.settle, w.now + 5, eng.verdict)
    assert w.state(pid) == "succeeded"  # no sample since the fix yet
    eng.feed("n1", 2, disk(w.now + 10, 0.96), w.now + 10)
    w.tx(dispatch.settle, w.now + 11, eng.verdict)
    assert w.state(pid) == "succeeded"  # still full: not yet, the window is open
    eng.feed("n1", 3, disk(w.now + 20, 0.40), w.now + 20)
    eng.tick(w.now + 21)
    assert [i.state for i in eng.instances.values()] == ["firing"]  # keep_firing_for holds it
    w.tx(dispatch.settle, w.now + 21, eng.verdict)
    assert w.state(pid) == "verified"


def test_no_fresh_data_at_all_is_not_verified_and_says_so(w):
    eng = Engine(load_text(FULL, "f.yaml"), next_id=7)
    eng.feed("n1", 1, disk(w.now - 30, 0.95), w.now - 30)
    pid = fixed(w)
    w.tx(dispatch.settle, w.now + 301, eng.verdict)
    p = proposals.get(w.db, pid)
    assert p["state"] == "not verified" and "no data since the fix" in p["reason"]


def test_without_an_engine_the_alert_decides_as_before(w):
    pid = fixed(w)
    w.tx(dispatch.settle, w.now + 301)
    p = proposals.get(w.db, pid)
    assert p["state"] == "not verified" and "still firing" in p["reason"]


def test_a_read_only_diagnostic_ends_diagnosed_and_needs_no_verification(w):
    pid = w.propose("disk-report", {"path": "/"})
    w.approve(pid)
    [(_, job_id)] = w.dispatch()
    w.result("n1", job_id, "succeeded", 0, "largest reclaimable: none")
    p = proposals.get(w.db, pid)
    assert (p["state"], p["verify_job_id"], p["verify_deadline"]) == ("diagnosed", None, None)
    assert p["output"] == "largest reclaimable: none"
    w.tx(dispatch.settle, w.now + 1000)
    assert w.state(pid) == "diagnosed"
