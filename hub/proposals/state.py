"""Proposals: the state machine between a firing alert and a fix that ran.

    proposed -> approved | rejected | expired | escalated
    approved -> dispatched | expired | escalated | failed
    dispatched -> running | succeeded | failed
    running -> succeeded | failed
    succeeded -> verified | not verified | diagnosed

A read-only playbook (a diagnostic) ends ``diagnosed``: there was nothing to fix, and its
output is evidence for the fix proposed after it. A fix is ``verified`` when the rule's own
condition cleared on data newer than the fix (or its alert resolved), ``not verified`` when
the condition still held when the verify window closed, or the playbook's verify step failed.

Every transition is a row in ``proposal_transitions`` (time, actor, note) and an entry in the
hash-chained audit. An approval is bound to the script's SHA-256, the parameters, the node and
an expiry; the dispatcher checks all four again before it signs a job. A per-(rule, node) run
budget stops fix loops: past it a proposal is escalated to a person instead of run.

Every function here takes a connection inside a write transaction (the hub's writer, or the
CLI's own BEGIN IMMEDIATE) and never commits.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import sqlite3
import time
from typing import Any

from agent import playbook as pbmod
from agent.playbook import Playbook
from hub import audit
from hub.errors import BadRequest, Conflict, NotFound

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "proposed": ("approved", "rejected", "expired", "escalated"),
    "approved": ("dispatched", "expired", "escalated", "failed"),
    "dispatched": ("running", "succeeded", "failed"),
    "running": ("succeeded", "failed"),
    "succeeded": ("verified", "not verified", "diagnosed"),
}
STATES = ("proposed", "approved", "rejected", "expired", "escalated", "dispatched", "running",
          "succeeded", "failed", "verified", "not verified", "diagnosed")
OPEN = ("proposed", "approved", "dispatched", "running", "succeeded")
BUDGET_WINDOW = 3600.0


def canonical_params(params: dict[str, str]) -> str:
    return audit.canonical(params)


def os_user() -> str:
    """Who is approving: the OS account (not $USER, which anyone can set), and the sudo caller."""
    name = pwd.getpwuid(os.getuid()).pw_name
    sudo = os.environ.get("SUDO_USER")
    return f"{name} (sudo by {sudo})" if sudo and sudo != name else name


# --- requests (written by the alert listener, inside the rules engine's transaction) -------


def record_request(db: sqlite3.Connection, alert: dict) -> int | None:
    """The alert listener: on a firing alert with candidates, queue a request. Cheap on
    purpose: it runs inside ingest's transaction."""
    if alert.get("transition") != "firing" or not alert.get("propose"):
        return None
    candidates = [c for c in alert["propose"] if isinstance(c, dict)]
    if not candidates:
        return None
    rule = alert.get("rule_name") or alert.get("rule")
    rule_name = rule if isinstance(rule, str) else getattr(rule, "name", None) or str(rule)
    plain = {k: v for k, v in alert.items() if k not in ("rule", "propose")}
    cur = db.execute(
        "INSERT INTO proposal_requests (ts, alert_id, rule, node, alert, candidates) VALUES (?, ?, ?, ?, ?, ?)",
        (time.time(), alert.get("id"), rule_name, str(alert.get("node") or ""),
         json.dumps({**plain, "rule": rule_name}, default=str), json.dumps(candidates, default=str)),
    )
    return cur.lastrowid


# --- state machine ------------------------------------------------------------------------


def get(db: sqlite3.Connection, pid: int) -> dict:
    cur = db.execute("SELECT * FROM proposals WHERE id = ?", (pid,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no proposal {pid}")
    return dict(zip([d[0] for d in cur.description], tuple(row), strict=True))


def transition(db: sqlite3.Connection, pid: int, to: str, actor: str, note: str | None = None,
               now: float | None = None, **fields: Any) -> dict:
    now = time.time() if now is None else now
    p = get(db, pid)
    if to not in TRANSITIONS.get(p["state"], ()):
        raise Conflict(f"proposal {pid} is {p['state']}; it cannot become {to}")
    sets = {"state": to, "updated": now, **fields}
    db.execute(
        f"UPDATE proposals SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",  # noqa: S608 - keys are ours
        (*sets.values(), pid),
    )
    db.execute(
        "INSERT INTO proposal_transitions (proposal_id, ts, from_state, to_state, actor, note) VALUES (?, ?, ?, ?, ?, ?)",
        (pid, now, p["state"], to, actor, note),
    )
    audit.append(db, actor, to, pid, {"from": p["state"], "note": note, **{
        k: v for k, v in fields.items() if k in ("approval_sha256", "approval_params", "approval_node",
                                                  "approval_expires", "job_id", "exit_code", "reason")}}, now)
    return {**p, **sets}


def runs_in_window(db: sqlite3.Connection, rule: str | None, node: str, now: float) -> int:
    """Fix runs for this rule on this node in the last hour (dispatched run jobs). Read-only
    diagnostics do not count: they cannot be a fix loop."""
    if rule is None:
        return 0
    return db.execute(
        "SELECT count(*) FROM jobs j JOIN proposals p ON p.id = j.proposal_id"
        " WHERE j.mode = 'run' AND p.risk != 'read-only' AND p.rule = ? AND p.node = ? AND j.created > ?",
        (rule, node, now - BUDGET_WINDOW),
    ).fetchone()[0]


def over_budget(db: sqlite3.Connection, rule: str | None, node: str, budget: int, now: float) -> str | None:
    n = runs_in_window(db, rule, node, now)
    if budget > 0 and n >= budget:
        return (f"run budget exhausted: rule {rule!r} already ran {n} fix(es) on {node} in the last hour"
                f" (budget {budget}); a person has to look at this one")
    return None


def create(db: sqlite3.Connection, *, node: str, pb: Playbook, params: dict[str, str],
           rule: str | None = None, alert_id: int | None = None, request_id: int | None = None,
           why: str = "", evidence: list | None = None, rationale: str | None = None,
           chosen_by: str = "rule", decision_id: int | None = None, auto: bool = False,
           ttl: float = 86400.0, budget: int = 3, actor: str = "hub", now: float | None = None) -> int:
    """Create a proposal from validated parameters (validated again here: nothing else may
    bypass the header). Past the run budget it is born escalated."""
    now = time.time() if now is None else now
    params = pbmod.validate_params(pb, params)
    script = _script_of(pb)
    escalate = over_budget(db, rule, node, budget, now)
    cur = db.execute(
        "INSERT INTO proposals (created, updated, state, node, rule, alert_id, request_id, playbook,"
        " sha256, risk, params, why, evidence, rationale, chosen_by, decision_id, auto, expires, reason, script)"
        " VALUES (?, ?, 'proposed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
        (now, now, node, rule, alert_id, request_id, pb.name, pb.sha256, pb.risk,
         canonical_params(params), why, json.dumps(evidence or [], default=str), rationale,
         chosen_by, decision_id, int(auto), now + ttl, script),
    )
    pid = cur.lastrowid
    assert pid is not None
    db.execute(
        "INSERT INTO proposal_transitions (proposal_id, ts, from_state, to_state, actor, note) VALUES (?, ?, NULL, 'proposed', ?, ?)",
        (pid, now, actor, why or None),
    )
    audit.append(db, actor, "proposed", pid, {
        "node": node, "playbook": pb.name, "sha256": pb.sha256, "risk": pb.risk, "params": params,
        "rule": rule, "alert_id": alert_id, "chosen_by": chosen_by, "decision_id": decision_id}, now)
    if escalate:
        transition(db, pid, "escalated", "hub", escalate, now, reason=escalate)
    return pid


def _script_of(pb: Playbook) -> str:
    """The script text whose hash is pb.sha256 (the file may have changed since it was loaded)."""
    try:
        with open(pb.path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise Conflict(f"playbook {pb.name!r} cannot be read: {e.strerror}") from None
    if hashlib.sha256(data).hexdigest() != pb.sha256:
        raise Conflict(f"playbook {pb.name!r} changed while the proposal was being made; try again")
    return data.decode("utf-8", "replace")


def approve(db: sqlite3.Connection, pid: int, actor: str, pb: Playbook | None, *, ttl: float = 3600.0,
            budget: int = 3, confirm_node: str | None = None, now: float | None = None) -> dict:
    """Bind an approval to the script's hash, the parameters, the node and an expiry. Returns
    the proposal: its state is ``approved``, or ``expired``/``escalated`` when it could not be.
    ``pb`` is the playbook as the hub has it now: if it changed since the proposal, the
    person approved something else than what would run, so the approval is refused."""
    now = time.time() if now is None else now
    p = get(db, pid)
    if p["state"] != "proposed":
        raise Conflict(f"proposal {pid} is {p['state']}; only a proposed one can be approved")
    if p["expires"] is not None and p["expires"] < now:
        # recorded, not raised: the caller commits and tells the person (a raise would roll it back)
        return transition(db, pid, "expired", "hub", "not approved in time", now,
                          reason="expired before it was approved")
    if pb is None:
        raise Conflict(f"playbook {p['playbook']!r} is no longer installed on the hub")
    if pb.sha256 != p["sha256"]:
        raise Conflict(f"playbook {pb.name!r} changed since proposal {pid} was made "
                       f"(was {p['sha256'][:12]}, now {pb.sha256[:12]}): it cannot be approved")
    if pb.risk == "destructive" and confirm_node != p["node"]:
        raise BadRequest(f"proposal {pid} runs a destructive playbook: confirm by typing the node name {p['node']!r}")
    try:
        params = pbmod.validate_params(pb, json.loads(p["params"]))
    except ValueError as e:
        raise BadRequest(f"proposal {pid} cannot be approved: {e}") from None
    if canonical_params(params) != p["params"]:
        raise Conflict(f"proposal {pid}: parameters no longer pass the playbook header as stored")
    reason = over_budget(db, p["rule"], p["node"], budget, now)
    if reason:
        return transition(db, pid, "escalated", actor, reason, now, reason=reason)
    return transition(db, pid, "approved", actor, None, now, approved_by=actor, approved_at=now,
                      approval_sha256=pb.sha256, approval_params=p["params"],
                      approval_node=p["node"], approval_expires=now + ttl)


def reject(db: sqlite3.Connection, pid: int, actor: str, reason: str, now: float | None = None) -> dict:
    reason = (reason or "").strip()
    if not reason:
        raise BadRequest("a rejection needs a reason")
    p = get(db, pid)
    if p["state"] not in ("proposed", "approved"):
        raise Conflict(f"proposal {pid} is {p['state']}; only a proposed or approved one can be rejected")
    if p["state"] == "approved":  # withdraw the approval first: approved -> rejected is not an edge
        raise Conflict(f"proposal {pid} is already approved and may be dispatching; it cannot be rejected now")
    return transition(db, pid, "rejected", actor, reason[:2000], now, reason=reason[:2000])


def expire_due(db: sqlite3.Connection, now: float | None = None) -> list[int]:
    now = time.time() if now is None else now
    out = []
    for (pid,) in db.execute("SELECT id FROM proposals WHERE state = 'proposed' AND expires < ?", (now,)).fetchall():
        transition(db, pid, "expired", "hub", "not approved in time", now)
        out.append(pid)
    for (pid,) in db.execute("SELECT id FROM proposals WHERE state = 'approved' AND approval_expires < ?", (now,)).fetchall():
        transition(db, pid, "expired", "hub", "approval expired before the job was sent", now)
        out.append(pid)
    return out


def open_for_alert(db: sqlite3.Connection, alert_id: int | None, node: str, rule: str | None,
                   playbook: str) -> int | None:
    """An open proposal of this playbook already answering this alert (a re-firing alert
    makes no duplicate)."""
    q = "SELECT id FROM proposals WHERE state IN ({}) AND node = ? AND playbook = ? AND ".format(",".join("?" * len(OPEN)))
    if alert_id is not None:
        row = db.execute(q + "alert_id = ?", (*OPEN, node, playbook, alert_id)).fetchone()
    else:
        row = db.execute(q + "rule IS ?", (*OPEN, node, playbook, rule)).fetchone()
    return row[0] if row else None


def history(db: sqlite3.Connection, pid: int) -> list[dict]:
    return [
        {"ts": r[0], "from": r[1], "to": r[2], "actor": r[3], "note": r[4]}
        for r in db.execute(
            "SELECT ts, from_state, to_state, actor, note FROM proposal_transitions WHERE proposal_id = ? ORDER BY id",
            (pid,),
        )
    ]


def approval_record(db: sqlite3.Connection, pid: int) -> dict | None:
    """What the audit trail says was approved (the newest approval of this proposal)."""
    row = db.execute(
        "SELECT data FROM audit WHERE proposal_id = ? AND action = 'approved' ORDER BY id DESC LIMIT 1", (pid,)
    ).fetchone()
    return json.loads(row[0]) if row else None
