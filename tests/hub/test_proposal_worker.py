"""The proposals feature inside a real in-process hub: alert listener -> request -> proposals,
the brain's answer validated again, the per-node job long poll, results through ingest."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import time

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import hub.brain as brain_mod
from agent import wire
from agent.playbook import load
from hub.keys import ALERT_LISTENERS
from hub.paths import shipped
from hub.proposals import state as proposals
from hub.store import open_db
from tests.conftest import async_wait_for


async def join(h, name):
    token = h.enroll(name)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{h.url}/v1/join", json={"token": token}) as r:
            body = await r.json()
            assert r.status == 200, body
            return body["credential"], body["hub_public_key"]


async def poll(h, cred, wait=0):
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {cred}"}) as s:
        async with s.get(f"{h.url}/v1/jobs", params={"wait": str(wait)}) as r:
            return r.status, await r.json()


def fire(h, alert):
    """Call our listener the way the rules engine does: in the writer, inside a transaction."""
    mine = [fn for fn in h.app[ALERT_LISTENERS] if fn.__module__ == "hub.proposals.web"]
    assert len(mine) == 1
    return h.writer.run(lambda db: mine[0](db, alert))


ALERT = {"id": 41, "node": "n1", "rule": object(), "rule_name": "unit-failed", "transition": "firing",
         "annotations": {"summary": "nginx.service failed on n1"}, "events": [5, 6],
         "propose": [
             {"playbook": "unit-logs", "params": {"unit": "nginx.service"}, "auto": True},
             {"playbook": "nope", "params": {}},
             {"playbook": "restart-unit", "params": {"unit": "nginx.service; reboot"}},
             {"playbook": "restart-unit", "params": {"unit": "nginx"}},
             {"playbook": "block-address", "params": {"address": "203.0.113.9"}, "auto": True},
         ]}


def rows(h, sql, args=()):
    return h.query(sql, args)


@pytest.fixture
def no_brain(monkeypatch):
    def decide(alert, candidates, playbooks, **kw):
        raise RuntimeError("no model here")

    monkeypatch.setattr(brain_mod, "decide", decide)


async def send(h, cred, node, ev):
    """One event from the node, through the normal ingest path."""
    seq = h.__dict__.setdefault("seqs", {}).get(node, 0) + 1
    h.seqs[node] = seq
    body = wire.encode_batch(node, time.time(), [(seq, wire.encode_event(ev))])
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {cred}"}) as s:
        async with s.post(f"{h.url}/v1/ingest", data=io.BytesIO(body)) as r:
            assert r.status == 200, await r.text()


async def report(h, cred, node, job, status, exit_code=None, output=""):
    """The node's answer to a job."""
    await send(h, cred, node, wire.JobResult(ts=time.time(), job_id=job["id"], playbook=job["playbook"],
                                             status=status, exit_code=exit_code, output=output))


async def test_alert_to_proposals_diagnostics_and_signed_jobs(hub, no_brain):
    cred1, pub = await join(hub, "n1")
    cred2, _ = await join(hub, "n2")
    await fire(hub, ALERT)
    # round one: only the read-only diagnostic, run at once; the fix waits for its output
    await async_wait_for(lambda: rows(hub, "SELECT state FROM proposals WHERE playbook = 'unit-logs'")
                         == [("dispatched",)], 10, what="the diagnostic dispatched")
    assert rows(hub, "SELECT count(*) FROM proposals")[0][0] == 1
    assert rows(hub, "SELECT outcome, done IS NULL FROM proposal_requests")[0][0].startswith("diagnosing: ")
    status, body = await poll(hub, cred1)
    assert status == 200
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(pub))
    for j in body["jobs"]:
        key.verify(base64.b64decode(j["signature"]), j["payload"].encode())
    [diag] = [json.loads(j["payload"]) for j in body["jobs"]]
    assert (diag["playbook"], diag["mode"], diag["node"]) == ("unit-logs", "run", "n1")
    assert (await poll(hub, cred2))[1] == {"jobs": []}  # another node sees none of them
    assert (await poll(hub, cred1))[1] == {"jobs": []}  # handed out once
    await asyncio.sleep(1.5)  # a worker tick later the fix is still not chosen
    assert rows(hub, "SELECT count(*) FROM proposals")[0][0] == 1
    await report(hub, cred1, "n1", diag, "succeeded", 0, "nginx: bind() to 0.0.0.0:80 failed")
    # a diagnostic is not a fix: it ends "diagnosed", never "not verified"
    await async_wait_for(lambda: rows(hub, "SELECT state FROM proposals WHERE playbook = 'unit-logs'")
                         == [("diagnosed",)], 10, what="diagnosed")
    await async_wait_for(lambda: rows(hub, "SELECT count(*) FROM proposals")[0][0] == 2, 10, what="the fix")
    got = {r[0]: r[1:] for r in rows(hub, "SELECT playbook, state, params, chosen_by, auto, why, evidence FROM proposals")}
    # invalid candidates are skipped; the first valid fix (no brain here) waits for a person;
    # the diagnostic's output is its evidence, beside the alert's events
    assert got["restart-unit"][:4] == ("proposed", '{"unit":"nginx.service"}', "rule", 0)
    assert "nginx.service failed on n1" in got["restart-unit"][4]
    evidence = json.loads(got["restart-unit"][5])
    assert evidence[:2] == [5, 6]
    assert evidence[2]["playbook"] == "unit-logs" and "bind() to 0.0.0.0:80 failed" in evidence[2]["output"]
    assert "block-address" not in got
    steps = rows(hub, "SELECT to_state FROM proposal_transitions t JOIN proposals p ON p.id = t.proposal_id"
                      " WHERE p.playbook = 'unit-logs' ORDER BY t.id")
    assert [s for (s,) in steps] == ["proposed", "approved", "dispatched", "succeeded", "diagnosed"]
    # the refused candidates are on the record, with the reason
    reasons = [json.loads(d)["reason"] for (d,) in rows(hub, "SELECT data FROM audit WHERE action = 'candidate refused'")]
    assert any("'nope' is not installed" in r for r in reasons)
    assert any("'nginx.service; reboot' is not a systemd unit name" in r for r in reasons)
    outcome = rows(hub, "SELECT outcome FROM proposal_requests")[0][0]
    assert "refused:" in outcome and "not a systemd unit name" in outcome
    # no check job for restart-unit: nothing but a read-only diagnostic runs before approval
    assert (await poll(hub, cred1))[1] == {"jobs": []}
    # the same alert firing again makes no duplicates while the fix is open
    await fire(hub, ALERT)
    await async_wait_for(lambda: rows(hub, "SELECT count(*) FROM proposal_requests WHERE done IS NULL")[0][0] == 0, 10)
    assert rows(hub, "SELECT count(*) FROM proposals WHERE playbook = 'restart-unit'")[0][0] == 1


DISK = {"id": 42, "node": "n1", "rule": object(), "rule_name": "disk-almost-full", "transition": "firing",
        "annotations": {"summary": "/srv on n1 is 95% full"}, "events": [],
        "propose": [
            {"playbook": "disk-report", "params": {"path": "/srv"}, "auto": True},
            {"playbook": "clean-tmp", "params": {"path": "/tmp", "age": "1d"},
             "if_output": r"^largest reclaimable: clean-tmp (?P<path>/\S*)$"},
            {"playbook": "journal-vacuum", "params": {"size": "200M"},
             "if_output": "^largest reclaimable: journal-vacuum$"},
        ]}


@pytest.mark.parametrize("output,expect", [
    ("reclaimable: journal-vacuum 9000 KiB\nlargest reclaimable: journal-vacuum\n",
     ("journal-vacuum", '{"size":"200M"}')),
    # the captured directory fills the parameter, and passes the header again
    ("largest reclaimable: clean-tmp /var/tmp/cache\n", ("clean-tmp", '{"age":"86400","path":"/var/tmp/cache"}')),
    ("largest reclaimable: clean-tmp /etc\n", None),  # fails the header's pattern: no fix
    ("largest reclaimable: none\n", None),  # nothing fits: diagnosed, nothing to approve
])
async def test_the_fix_is_chosen_on_the_diagnostics_evidence(hub, no_brain, output, expect):
    cred, _ = await join(hub, "n1")
    await fire(hub, DISK)
    await async_wait_for(lambda: rows(hub, "SELECT state FROM proposals")
                         == [("dispatched",)], 10, what="the diagnostic dispatched")
    [job] = [json.loads(j["payload"]) for j in (await poll(hub, cred))[1]["jobs"]]
    await report(hub, cred, "n1", job, "succeeded", 0, output)
    await async_wait_for(lambda: rows(hub, "SELECT done IS NOT NULL FROM proposal_requests") == [(1,)], 10,
                         what="the request handled")
    fixes = rows(hub, "SELECT playbook, params FROM proposals WHERE auto = 0")
    assert fixes == ([expect] if expect else [])
    if expect is None:
        assert "refused:" in rows(hub, "SELECT outcome FROM proposal_requests")[0][0]


async def test_auto_is_ignored_for_anything_but_read_only(hub, no_brain):
    await join(hub, "n1")
    await fire(hub, {**ALERT, "propose": [{"playbook": "block-address", "params": {"address": "203.0.113.9"}, "auto": True}]})
    await async_wait_for(lambda: rows(hub, "SELECT count(*) FROM proposals")[0][0] == 1, 10, what="proposal")
    await asyncio.sleep(1.5)  # a worker tick later it is still waiting for a person
    assert rows(hub, "SELECT state, auto, approved_by FROM proposals")[0] == ("proposed", 0, None)
    assert rows(hub, "SELECT count(*) FROM jobs WHERE mode = 'run'")[0][0] == 0


async def test_poll_needs_a_node_credential(hub):
    status, body = await poll(hub, "hln_forged")
    assert status == 401 and "credential" in body["error"]


@pytest.mark.parametrize("answer,expect_params,expect_by", [
    ({"playbook": "restart-unit", "params": {"unit": "php-fpm"}, "rationale": "php died", "evidence": [9], "decision_id": None},
     '{"unit":"php-fpm.service"}', "brain"),
    ({"playbook": "apt-upgrade", "params": {}, "rationale": "why not", "evidence": [], "decision_id": None},
     '{"unit":"nginx.service"}', "rule"),  # not a playbook the rule allowed
    ({"playbook": "restart-unit", "params": {"unit": "$(reboot)"}, "rationale": "x", "evidence": [], "decision_id": None},
     '{"unit":"nginx.service"}', "rule"),  # parameters fail the header
    ({"playbook": None, "params": {}, "rationale": "none fits", "evidence": [], "decision_id": None},
     '{"unit":"nginx.service"}', "rule"),
    ("garbage", '{"unit":"nginx.service"}', "rule"),
])
async def test_brain_answer_is_validated_again(hub, monkeypatch, answer, expect_params, expect_by):
    await join(hub, "n1")
    seen = {}

    def decide(alert, candidates, playbooks, **kw):
        seen["candidates"], seen["books"] = candidates, sorted(playbooks)
        return answer

    monkeypatch.setattr(brain_mod, "decide", decide)
    alert = {**ALERT, "propose": [{"playbook": "restart-unit", "params": {"unit": "nginx"}},
                                  {"playbook": "restart-container", "params": {"container": "web"}}]}
    await fire(hub, alert)
    await async_wait_for(lambda: rows(hub, "SELECT count(*) FROM proposals")[0][0] == 1, 10, what="proposal")
    assert seen["books"] == ["restart-container", "restart-unit"]  # only what the rule allowed
    params, by = rows(hub, "SELECT params, chosen_by FROM proposals")[0]
    assert (params, by) == (expect_params, expect_by)


async def test_approval_wakes_the_long_poll_and_results_arrive_through_ingest(hub, no_brain):
    cred, _ = await join(hub, "n1")
    await fire(hub, {**ALERT, "propose": [{"playbook": "restart-unit", "params": {"unit": "nginx"}}]})
    await async_wait_for(lambda: rows(hub, "SELECT count(*) FROM proposals")[0][0] == 1, 10)
    await poll(hub, cred)  # take the check job
    pid = rows(hub, "SELECT id FROM proposals")[0][0]

    def approve_like_the_cli():
        db = open_db(hub.data_dir / "homelab.db")
        db.execute("BEGIN IMMEDIATE")
        pb = load(shipped("playbooks") / "restart-unit.sh")
        proposals.approve(db, pid, "alice", pb)
        db.execute("COMMIT")
        db.close()

    waiting = asyncio.ensure_future(poll(hub, cred, wait=15))
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, approve_like_the_cli)
    status, body = await asyncio.wait_for(waiting, 20)
    assert time.monotonic() - t0 < 10
    [job] = [json.loads(j["payload"]) for j in body["jobs"]]
    assert (job["mode"], job["playbook"], job["proposal"]) == ("run", "restart-unit", pid)
    # the node reports through the normal ingest path
    events = [wire.JobResult(ts=time.time(), job_id=job["id"], playbook="restart-unit", status=s, exit_code=c, output=o)
              for s, c, o in (("running", None, ""), ("succeeded", 0, "restarted"))]
    body = wire.encode_batch("n1", time.time(), [(i + 1, wire.encode_event(e)) for i, e in enumerate(events)])
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {cred}"}) as s:
        async with s.post(f"{hub.url}/v1/ingest", data=io.BytesIO(body)) as r:
            assert r.status == 200
    await async_wait_for(lambda: rows(hub, "SELECT state FROM proposals")[0][0] == "succeeded", 10, what="succeeded")
    vid = rows(hub, "SELECT verify_job_id FROM proposals")[0][0]
    assert vid and rows(hub, "SELECT mode, state FROM jobs WHERE id = ?", (vid,))[0] == ("verify", "queued")


async def test_shutdown_waits_for_a_decision_in_flight(tmp_path, monkeypatch):
    """The brain logs its decision through the writer: stopping the hub mid-decision must let
    it finish while the writer still runs (else the thread would wait forever)."""
    import threading

    from aiohttp import web

    from hub.app import create_app
    from hub.config import load_settings
    from hub.keys import WRITER

    for k in [k for k in os.environ if k.startswith("HOMELAB_")]:
        monkeypatch.delenv(k)
    app = create_app(load_settings(data_dir=tmp_path / "hub", listen="127.0.0.1:0"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    started, logged = threading.Event(), threading.Event()

    def slow_decide(alert, candidates, playbooks, **kw):
        started.set()
        time.sleep(1.0)
        app[WRITER].run_sync(lambda db: db.execute("SELECT 1"))  # as runtime.record does
        logged.set()
        return {"playbook": None, "params": {}, "rationale": "", "evidence": [], "decision_id": None}

    monkeypatch.setattr(brain_mod, "decide", slow_decide)
    two = [{"playbook": "restart-unit", "params": {"unit": "a"}}, {"playbook": "restart-unit", "params": {"unit": "b"}}]
    mine = [fn for fn in app[ALERT_LISTENERS] if fn.__module__ == "hub.proposals.web"]
    await app[WRITER].run(lambda db: mine[0](db, {**ALERT, "propose": two}))
    await async_wait_for(started.is_set, 10, what="the decision to start")
    await asyncio.wait_for(runner.cleanup(), 30)
    assert logged.is_set()


async def test_a_re_fire_while_the_fix_is_open_runs_no_new_diagnostics(hub, no_brain):
    cred, _ = await join(hub, "n1")
    await fire(hub, DISK)
    await async_wait_for(lambda: rows(hub, "SELECT state FROM proposals") == [("dispatched",)], 10)
    [job] = [json.loads(j["payload"]) for j in (await poll(hub, cred))[1]["jobs"]]
    await report(hub, cred, "n1", job, "succeeded", 0, "largest reclaimable: journal-vacuum\n")
    await async_wait_for(lambda: rows(hub, "SELECT count(*) FROM proposals WHERE auto = 0") == [(1,)], 10)
    await fire(hub, DISK)
    await async_wait_for(lambda: rows(hub, "SELECT count(*) FROM proposal_requests WHERE done IS NULL") == [(0,)]
                         and rows(hub, "SELECT count(*) FROM proposal_requests") == [(2,)], 10)
    assert rows(hub, "SELECT playbook, state FROM proposals ORDER BY id") == [("disk-report", "diagnosed"),
                                                                            ("journal-vacuum", "proposed")]
    outcome = rows(hub, "SELECT outcome FROM proposal_requests ORDER BY id DESC LIMIT 1")[0][0]
    assert outcome.startswith("journal-vacuum: proposal ") and "still open" in outcome


async def test_a_long_poll_left_behind_by_a_restarting_agent_does_not_swallow_the_job(hub, no_brain):
    """An agent restarting leaves its old GET /v1/jobs?wait= waiting on the hub. A job approved
    afterwards went to that dead request: marked delivered, never run (a lab node's clean-tmp
    sat 'dispatched' for good). It must go to the poll that is still there."""
    cred, _ = await join(hub, "n1")
    await fire(hub, {**ALERT, "propose": [{"playbook": "restart-unit", "params": {"unit": "nginx"}}]})
    await async_wait_for(lambda: rows(hub, "SELECT count(*) FROM proposals")[0][0] == 1, 10)
    await poll(hub, cred)  # take the check job
    pid = rows(hub, "SELECT id FROM proposals")[0][0]

    # the old agent's poll: sent, then its process is gone (the connection closes)
    old = aiohttp.ClientSession(headers={"Authorization": f"Bearer {cred}"})
    abandoned = asyncio.ensure_future(old.get(f"{hub.url}/v1/jobs", params={"wait": "30"}))
    await asyncio.sleep(0.5)
    abandoned.cancel()
    await old.close()

    def approve_like_the_cli():
        db = open_db(hub.data_dir / "homelab.db")
        db.execute("BEGIN IMMEDIATE")
        proposals.approve(db, pid, "alice", load(shipped("playbooks") / "restart-unit.sh"))
        db.execute("COMMIT")
        db.close()

    await asyncio.get_running_loop().run_in_executor(None, approve_like_the_cli)
    run_job = "SELECT state FROM jobs WHERE proposal_id = ? AND mode = 'run'"
    await async_wait_for(lambda: rows(hub, run_job, (pid,)), 20, what="the run job")
    # the abandoned request wakes now; give it two seconds to (wrongly) take the job
    for _ in range(20):
        if rows(hub, run_job, (pid,)) != [("queued",)]:
            break
        await asyncio.sleep(0.1)
    assert rows(hub, run_job, (pid,)) == [("queued",)], "the job went to a request nobody reads"
    status, body = await poll(hub, cred)  # the restarted agent's first poll
    assert status == 200
    assert [json.loads(j["payload"])["mode"] for j in body["jobs"]] == ["run"], body
