"""Proposals on the running hub: alert listener, proposal worker, job endpoint, results.

- The alert listener (called by the rules engine inside ingest's transaction) only queues a
  ``proposal_requests`` row. The worker turns requests into proposals outside that
  transaction: it validates the rule's candidates against the playbook headers, may ask the
  brain to choose among them (in a thread; its answer is validated again, it can only pick a
  candidate the rule allowed), and writes the proposal through the writer.
- ``GET /v1/jobs?wait=N`` is the node's long poll for signed jobs (the node dials out; no
  inbound port on the node). A node only ever sees its own jobs.
- A commit subscriber hands ``job_result`` events to the worker, which folds them into the
  job and proposal state; after a successful run it queues the verify step, then asks the
  rules engine whether the rule's own condition cleared on data since the fix (verified) or
  still holds when the window closes (not verified). A read-only diagnostic ends diagnosed.
- Every second the worker also expires stale proposals, approves what a standing policy
  covers (hub.proposals.policies), signs jobs for approvals (the CLI approves in another
  process; the hub checks the binding again and signs), settles verifications, and counts
  policy runs (a policy suspends itself after two unverified runs in a row).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator

import msgspec
from aiohttp import web

from agent import wire
from agent.playbook import Playbook
from hub import audit
from hub.brain import guard
from hub.ingest import authenticate
from hub.keys import ALERT_LISTENERS, READ_DB, SETTINGS, SIGNING_KEY, WRITER
from hub.playbooks import Registry
from hub.proposals import jobs as dispatch
from hub.proposals import policies
from hub.proposals import state as proposals
from hub.rules import SERVICE as RULES_SERVICE

log = logging.getLogger(__name__)

STATE: web.AppKey[State] = web.AppKey("proposals_state")
MAX_WAIT = 30.0
TICK = 1.0
_json_event = msgspec.json.Decoder(wire.AnyEvent)


class State:
    def __init__(self, registry: Registry):
        self.registry = registry
        self.wake = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.results: list[tuple[str, wire.JobResult]] = []
        self.lock = threading.Lock()
        self.node_events: dict[str, asyncio.Event] = {}
        self.stopping = asyncio.Event()
        self.closing = False
        self.policy_checked = 0.0
        # One decision at a time, on a thread of our own: at shutdown we wait for a decision in
        # flight while the writer (which logs it) is still running.
        self.brain_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="proposals-brain")

    def poke(self) -> None:  # any thread
        self.loop.call_soon_threadsafe(self.wake.set)

    def node_event(self, node: str) -> asyncio.Event:
        ev = self.node_events.get(node)
        if ev is None:
            ev = self.node_events[node] = asyncio.Event()
        return ev


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_ctx)
    app.router.add_get("/v1/jobs", jobs_handler)

    async def on_shutdown(app: web.Application) -> None:
        st = app.get(STATE)
        if st is not None:
            st.stopping.set()
            for ev in st.node_events.values():
                ev.set()

    app.on_shutdown.append(on_shutdown)


async def _ctx(app: web.Application) -> AsyncIterator[None]:
    st = State(Registry.from_settings(app[SETTINGS]))
    app[STATE] = st
    writer = app[WRITER]

    def listener(db, alert: dict) -> None:
        if proposals.record_request(db, alert) is not None:
            st.poke()

    def subscriber(committed) -> None:
        got = [(c.node, c.event) for c in committed if c.kind == "job_result" and isinstance(c.event, wire.JobResult)]
        if got:
            with st.lock:
                st.results.extend(got)
            st.poke()

    app[ALERT_LISTENERS].append(listener)
    writer.subscribers.append(subscriber)
    await _recover(app, st)
    task = asyncio.create_task(_worker(app, st), name="proposals")
    yield
    # Stop by flag first, cancel only as a fallback, and never wait unbounded: on Python 3.11 a
    # cancellation can be swallowed by a timeout that completes at the same moment.
    st.closing = True
    st.wake.set()
    await asyncio.wait({task}, timeout=5)
    if not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=5)
    settings = app[SETTINGS]
    # bounded: a stuck model must not hold the hub's exit
    pool_done = asyncio.ensure_future(asyncio.to_thread(st.brain_pool.shutdown, True, cancel_futures=True))
    await asyncio.wait({pool_done}, timeout=float(getattr(settings, "brain_timeout", 20.0)) + 10.0)
    with contextlib.suppress(ValueError):
        writer.subscribers.remove(subscriber)
    with contextlib.suppress(ValueError):
        app[ALERT_LISTENERS].remove(listener)


async def _recover(app: web.Application, st: State) -> None:
    """Results committed while the hub was stopping were stored but maybe not folded in."""
    def load(db):
        open_jobs = {r[0] for r in db.execute(
            "SELECT id FROM jobs WHERE state NOT IN ('succeeded', 'failed', 'refused', 'timeout')")}
        if not open_jobs:
            return []
        out = []
        for node, data in db.execute(
            "SELECT node, data FROM events WHERE kind = 'job_result' AND ts > ? ORDER BY id",
            (time.time() - 7 * 86400,),
        ):
            try:
                ev = _json_event.decode(data)
            except msgspec.ValidationError:
                continue
            if isinstance(ev, wire.JobResult) and ev.job_id in open_jobs:
                out.append((node, ev))
        return out

    try:
        st.results.extend(await app[WRITER].run(load))
    except Exception:
        log.exception("could not recover job results")


async def _worker(app: web.Application, st: State) -> None:
    while not st.closing:
        st.wake.clear()  # before the step: a poke during it means another step right away
        try:
            await _step(app, st)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("proposal worker step failed")
        if st.closing:
            return
        try:
            async with asyncio.timeout(TICK):
                await st.wake.wait()
        except TimeoutError:
            pass


async def _step(app: web.Application, st: State) -> None:
    settings, writer, key = app[SETTINGS], app[WRITER], app[SIGNING_KEY]
    books = st.registry.all()
    with st.lock:
        results, st.results = st.results, []
    if results:
        def fold(db):
            now = time.time()
            for node, ev in results:
                dispatch.record_result(db, node, ev, books, key, settings.verify_window, now)
        try:
            await writer.run(fold)
        except Exception:
            with st.lock:  # keep them for the next step; record_result is idempotent
                st.results[:0] = results
            raise
    reqs = app[READ_DB].execute(READY_SQL).fetchall()
    for r in reqs:
        try:
            await _handle_request(app, st, books, tuple(r))
        except Exception as e:  # noqa: BLE001 - one bad request must not block the others
            log.exception("proposal request %s failed", r[0])
            err = f"error: {type(e).__name__}: {e}"[:1000]
            await writer.run(functools.partial(_request_failed, rid=r[0], outcome=err))

    rules = app.get(RULES_SERVICE)
    verdict = rules.verdict if rules is not None else None

    def tick(db):
        now = time.time()
        proposals.expire_due(db, now)
        policies.apply(db, books, now, approval_ttl=settings.approval_ttl, budget=settings.run_budget)
        dispatch.dispatch_approved(db, books, key, settings.run_budget, now)
        dispatch.settle(db, now, verdict)
        dispatch.expire_jobs(db, now)
        policies.settle(db, now)
        return [n for n, in db.execute("SELECT DISTINCT node FROM jobs WHERE state = 'queued'")]

    # a waiting proposal may come under a policy later (a window opens, the rate allows it):
    # looked at every POLICY_RECHECK s, not every second, so an idle hub stays without writes
    policy_due = time.monotonic() - st.policy_checked > POLICY_RECHECK and _policy_waiting(app[READ_DB])
    if results or reqs or policy_due or _due(app[READ_DB], time.time()):
        st.policy_checked = time.monotonic()
        for node in await writer.run(tick):
            st.node_event(node).set()


# Requests to handle: new ones, and those whose diagnostics have all ended.
READY_SQL = (
    "SELECT id, alert_id, rule, node, alert, candidates, diagnosing FROM proposal_requests r"
    " WHERE done IS NULL AND (diagnosing IS NULL OR NOT EXISTS (SELECT 1 FROM proposals p"
    " WHERE (p.request_id = r.id OR p.alert_id = r.alert_id) AND p.auto = 1 AND p.state IN ({})))"
    " ORDER BY id LIMIT 20".format(", ".join(f"'{s}'" for s in proposals.OPEN))
)
DUE_SQL = (
    "SELECT EXISTS (SELECT 1 FROM proposals WHERE state = 'approved'"
    " OR (state = 'succeeded' AND verify_deadline IS NOT NULL) OR (state = 'proposed' AND expires < :now))"
    " OR EXISTS (SELECT 1 FROM jobs WHERE state IN ('queued', 'delivered') AND expires < :now)"
)


POLICY_RECHECK = 30.0


def _policy_waiting(db) -> bool:
    return bool(db.execute(
        "SELECT EXISTS (SELECT 1 FROM policies WHERE state = 'active')"
        " AND EXISTS (SELECT 1 FROM proposals WHERE state = 'proposed' AND auto = 0)").fetchone()[0])


def _due(db, now: float) -> bool:
    """Anything for the tick to do? (A read, so an idle hub adds no write per second.)"""
    return bool(db.execute(DUE_SQL, {"now": now}).fetchone()[0])


def _request_failed(db: sqlite3.Connection, rid: int, outcome: str) -> None:
    db.execute("UPDATE proposal_requests SET done = ?, outcome = ? WHERE id = ?", (time.time(), outcome, rid))


async def _handle_request(app, st: State, books: dict[str, Playbook], row: tuple) -> None:
    """One firing alert -> proposals, in two rounds when the rule names diagnostics.

    Candidates marked ``auto`` whose playbook is read-only are diagnostics: each runs at once,
    approved by the rule, and ends ``diagnosed``. The fix is chosen only after they ended,
    among the other candidates whose ``if_output`` (if any) matches a diagnostic's output; the
    outputs are the fix proposal's evidence, and the brain (if there) sees them. With no
    diagnostics the fix is chosen at once. ``auto`` on anything but a read-only playbook is
    ignored (logged): a change always waits for a person or a standing policy."""
    req_id, alert_id, rule, node, alert_json, cand_json, diagnosing = row
    settings, writer, key = app[SETTINGS], app[WRITER], app[SIGNING_KEY]
    alert = json.loads(alert_json)
    valid: list[tuple[dict, Playbook, dict[str, str]]] = []
    problems = []
    for cand in json.loads(cand_json):
        try:
            pb, params = dispatch.validate_candidate(books, cand)
        except ValueError as e:
            problems.append(f"{cand.get('playbook') if isinstance(cand, dict) else cand}: {e}")
            log.warning("rule %s proposed an invalid fix: %s", rule, e)
            continue
        refused = guard(app[READ_DB], alert, pb.name, pb, params)
        if refused:  # e.g. never block an enrolled node, the hub or the tailnet (hub/brain/guards.py)
            problems.append(refused)
            log.warning("rule %s proposed a fix the guards refuse: %s", rule, refused)
            continue
        if cand.get("auto") and pb.risk != "read-only":
            log.warning("rule %s asks to auto-run %s, which is %s: a person must approve it", rule, pb.name, pb.risk)
        valid.append((cand, pb, params))
    diagnostics = [v for v in valid if v[0].get("auto") and v[1].risk == "read-only"]
    fixes = [v for v in valid if v not in diagnostics]
    evidence = list(alert.get("events") or [])
    read_db = app[READ_DB]
    fix_open = any(proposals.open_for_alert(read_db, alert_id, node, rule, pb.name) for _c, pb, _p in fixes)
    run_now: list[tuple[dict, Playbook, dict[str, str]]] = []
    fixes_now: list[tuple[dict, Playbook, dict[str, str]]] = []
    if diagnosing is None and diagnostics and not fix_open:  # (a re-fire while its fix is open: no rerun)
        run_now = diagnostics
    else:
        if diagnosing is not None or fix_open:
            # this request's diagnostics, or those already run for the same alert (a re-fire)
            found = read_db.execute(
                "SELECT id, playbook, state, output, reason FROM proposals WHERE auto = 1"
                " AND (request_id = ? OR alert_id = ?) ORDER BY id", (req_id, alert_id)).fetchall()
            diag = [{"proposal": r[0], "playbook": r[1], "state": r[2], "output": (r[3] or "")[-4000:],
                     **({"reason": r[4]} if r[4] else {})} for r in found]
            evidence += diag
            alert["diagnostics"] = diag
        for cand, pb, params in fixes:
            try:
                fitted = _fits(cand, pb, params, alert.get("diagnostics") or [])
            except ValueError as e:
                problems.append(f"{pb.name}: the diagnostics' values fail its header: {e}")
                continue
            if fitted is not None:
                fixes_now.append((cand, pb, fitted))
        if fixes and not fixes_now:
            problems.append("no fix candidate fits what the diagnostics found")
    choice = fixes_now[0] if fixes_now else None
    chosen_by, rationale, decision_id = "rule", None, None
    if fixes_now:
        decided = await _ask_brain(st, alert, fixes_now, settings)
        if decided is not None:
            picked, rationale, evidence2, decision_id = decided
            evidence = evidence2 or evidence
            if picked is not None:
                choice, chosen_by = picked, "brain"
    why = _why(alert, rule, node)
    waits = bool(run_now and fixes)  # the fix is chosen once these diagnostics ended

    def write(db):
        now = time.time()
        outcomes = []
        for cand, pb, params in run_now + ([choice] if choice else []):
            is_diag = (cand, pb, params) in diagnostics
            open_pid = proposals.open_for_alert(db, alert_id, node, rule, pb.name)
            if open_pid is not None:
                outcomes.append(f"{pb.name}: proposal {open_pid} is still open")
                continue
            pid = proposals.create(
                db, node=node, pb=pb, params=params, rule=rule, alert_id=alert_id, request_id=req_id,
                why=why, evidence=evidence, rationale=None if is_diag else rationale,
                chosen_by="rule" if is_diag else chosen_by, decision_id=None if is_diag else decision_id,
                auto=is_diag, ttl=settings.proposal_ttl, budget=settings.run_budget, now=now)
            outcomes.append(f"{pb.name}: proposal {pid}")
            if proposals.get(db, pid)["state"] != "proposed":
                continue
            if is_diag:
                proposals.approve(db, pid, f"rule:{rule}", pb, ttl=settings.approval_ttl,
                                  budget=settings.run_budget, now=now)
            else:
                dispatch.queue_check(db, key, pid, pb, node, params, now)
        for problem in problems:  # on the record: what the rule asked for and why it was refused
            audit.append(db, "hub", "candidate refused", None,
                         {"request": req_id, "rule": rule, "node": node, "alert_id": alert_id, "reason": problem[:2000]}, now)
        if problems:
            outcomes.append("refused: " + "; ".join(problems))
        outcome = "; ".join(outcomes)[:4000] or "nothing to propose"
        if waits:
            db.execute("UPDATE proposal_requests SET diagnosing = ?, outcome = ? WHERE id = ?",
                       (now, "diagnosing: " + outcome, req_id))
        else:
            db.execute("UPDATE proposal_requests SET done = ?, outcome = ? WHERE id = ?", (now, outcome, req_id))
        return outcome

    outcome = await writer.run(write)
    log.info("alert %s on %s (%s): %s", alert_id, node, rule, outcome)


def _fits(cand: dict, pb: Playbook, params: dict[str, str], diagnostics: list[dict]) -> dict[str, str] | None:
    """A candidate with ``if_output`` is offered only when a diagnostic that ended diagnosed
    printed a line matching it: the evidence, not the rule's order, picks the fix. The
    pattern's named groups fill parameters of the same name, and pass the header again
    (ValueError if not). Returns the parameters, or None when the candidate does not fit."""
    pattern = cand.get("if_output")
    if not pattern:
        return params
    rx = re.compile(pattern, re.MULTILINE)
    for d in diagnostics:
        m = rx.search(d["output"]) if d["state"] == "diagnosed" else None
        if m:
            found = {k: v for k, v in m.groupdict().items() if v is not None}
            return dispatch.pbmod.validate_params(pb, {**params, **found}) if found else params
    return None


def _why(alert: dict, rule, node: str) -> str:
    ann = alert.get("annotations")
    if isinstance(ann, str):
        with contextlib.suppress(ValueError):
            ann = json.loads(ann)
    summary = (ann or {}).get("summary") if isinstance(ann, dict) else None
    summary = summary or alert.get("summary") or ""
    return f"alert {alert.get('id')} ({rule}) firing on {node}" + (f": {summary}" if summary else "")


async def _ask_brain(st: State, alert: dict, valid, settings):
    """Let the brain choose among the rule's valid candidates, if it is installed. Its answer
    passes the same validation; anything else and the rule's first valid candidate stands."""
    try:
        brain = importlib.import_module("hub.brain")
        decide = brain.decide
    except (ImportError, AttributeError):
        return None
    candidates = [{"playbook": pb.name, "params": params} for _c, pb, params in valid]
    books = {pb.name: pb for _c, pb, _p in valid}
    loop = asyncio.get_running_loop()
    timeout = float(getattr(settings, "brain_timeout", 20.0)) + 10.0
    try:
        async with asyncio.timeout(timeout):
            out = await loop.run_in_executor(st.brain_pool, decide, alert, candidates, books)
    except Exception as e:  # noqa: BLE001 - the rule's choice stands, whatever went wrong
        log.warning("brain unavailable for alert %s (%s: %s): the rule's choice stands", alert.get("id"), type(e).__name__, e)
        return None
    if not isinstance(out, dict):
        log.warning("brain returned %r: the rule's choice stands", type(out).__name__)
        return None
    name = out.get("playbook")
    decision_id = out.get("decision_id") if isinstance(out.get("decision_id"), int) else None
    rationale = str(out.get("rationale") or "")[:2000] or None
    evidence = out.get("evidence") if isinstance(out.get("evidence"), list) else []
    if name is None:
        return None, rationale, evidence, decision_id
    for cand, pb, _p in valid:
        if pb.name == name:
            try:
                params = dispatch.pbmod.validate_params(pb, out.get("params") or {})
            except ValueError as e:
                log.warning("brain's parameters for %s refused (%s): the rule's choice stands", name, e)
                return None
            return (cand, pb, params), rationale, evidence, decision_id
    log.warning("brain chose %r, which the rule did not allow: the rule's choice stands", name)
    return None


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def jobs_handler(request: web.Request) -> web.Response:
    node = await authenticate(request)
    try:
        wait = max(0.0, min(float(request.query.get("wait", "0")), MAX_WAIT))
    except ValueError:
        wait = 0.0
    st: State = request.app[STATE]
    deadline = time.monotonic() + wait
    while True:
        if _gone(request):
            # An agent that restarts leaves its old long poll behind, still waiting here: a job
            # handed to it would be marked delivered and never reach the node (seen in the lab).
            return web.Response(status=499)  # nobody reads it
        now = time.time()
        rows = dispatch.pending(request.app[READ_DB], node, now)
        if rows:
            ids = [r["id"] for r in rows]
            await request.app[WRITER].run(
                functools.partial(dispatch.mark_delivered, node=node, ids=ids, now=now))
            if _gone(request):  # it hung up while the writer was busy: the next poll gets them
                await request.app[WRITER].run(functools.partial(dispatch.unmark_delivered, node=node, ids=ids))
                return web.Response(status=499)
            return web.json_response({"jobs": [{"payload": r["payload"], "signature": r["signature"]} for r in rows]})
        left = deadline - time.monotonic()
        if left <= 0 or st.stopping.is_set():
            return web.json_response({"jobs": []})
        ev = st.node_event(node)
        ev.clear()
        try:
            async with asyncio.timeout(min(left, TICK)):
                await ev.wait()
        except TimeoutError:
            pass
