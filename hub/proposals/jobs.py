"""Jobs: signing what the hub sends to nodes, and folding what they report back into proposals.

A job is canonical JSON signed with the hub's Ed25519 key (the one every agent pinned at
join time). The agent verifies the signature over the exact bytes, so nothing in transit or
in the jobs table can be altered without the node refusing it. Modes: ``run`` (only for an
approved proposal, bound to its approval), ``check`` (the header's dry run) and ``verify``.

Functions take a connection inside a write transaction and never commit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import sqlite3
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import playbook as pbmod
from agent.playbook import Playbook
from hub import audit
from hub.proposals import state as proposals
from hub.proposals.state import over_budget, transition

log = logging.getLogger(__name__)

JOB_VERSION = 1
PROBE_TTL = 600.0  # check and verify jobs: a node that is away longer gets a fresh one
FINAL = ("succeeded", "failed", "refused", "timeout")


def sign(key: Ed25519PrivateKey, job: dict) -> tuple[str, str]:
    payload = audit.canonical(job)
    return payload, base64.b64encode(key.sign(payload.encode())).decode()


def enqueue(db: sqlite3.Connection, key: Ed25519PrivateKey, *, pid: int | None, node: str, mode: str,
            pb: Playbook, params: dict[str, str], expires: float, now: float) -> str:
    job_id = "job_" + secrets.token_hex(12)
    job = {"v": JOB_VERSION, "id": job_id, "node": node, "proposal": pid, "mode": mode,
           "playbook": pb.name, "sha256": pb.sha256, "risk": pb.risk, "params": params,
           "issued": now, "expires": expires}
    payload, sig = sign(key, job)
    db.execute(
        "INSERT INTO jobs (id, proposal_id, node, mode, playbook, payload, signature, created, expires, state)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')",
        (job_id, pid, node, mode, pb.name, payload, sig, now, expires),
    )
    audit.append(db, "hub", f"job {mode} queued", pid, {"job_id": job_id, "node": node,
                                                         "playbook": pb.name, "sha256": pb.sha256}, now)
    return job_id


def dispatch_approved(db: sqlite3.Connection, books: dict[str, Playbook], key: Ed25519PrivateKey,
                      budget: int, now: float) -> list[tuple[int, str]]:
    """Sign a run job for every approved proposal whose approval still holds, checked again
    here: same script hash, same parameters, same node, not expired, within budget."""
    out = []
    rows = db.execute("SELECT id FROM proposals WHERE state = 'approved' ORDER BY id").fetchall()
    for (pid,) in rows:
        p = proposals.get(db, pid)
        pb = books.get(p["playbook"])
        problem = None
        if pb is None:
            problem = f"playbook {p['playbook']!r} is no longer installed on the hub"
        elif pb.sha256 != p["approval_sha256"]:
            problem = f"playbook {pb.name!r} changed after approval ({p['approval_sha256'][:12]} -> {pb.sha256[:12]})"
        elif p["approval_params"] != p["params"]:
            problem = "parameters differ from the approved ones"
        elif p["approval_node"] != p["node"]:
            problem = "node differs from the approved one"
        else:
            problem = _binding_problem(db, p, pb)
        if problem:
            transition(db, pid, "failed", "hub", f"not dispatched: {problem}", now, reason=problem)
            continue
        assert pb is not None
        if p["approval_expires"] is None or p["approval_expires"] < now:
            transition(db, pid, "expired", "hub", "approval expired before the job was sent", now)
            continue
        reason = over_budget(db, p["rule"], p["node"], budget, now)
        if reason:
            transition(db, pid, "escalated", "hub", reason, now, reason=reason)
            continue
        params = json.loads(p["params"])
        job_id = enqueue(db, key, pid=pid, node=p["node"], mode="run", pb=pb, params=params,
                         expires=p["approval_expires"], now=now)
        transition(db, pid, "dispatched", "hub", f"job {job_id}", now, job_id=job_id)
        out.append((pid, job_id))
    return out


def _binding_problem(db: sqlite3.Connection, p: dict, pb: Playbook) -> str | None:
    """Cross-check the proposal row against the audit trail's record of the approval, and the
    parameters against the header once more: an edit of the row after approval (both the
    values and their approval copies) is caught here, not on the node."""
    rec = proposals.approval_record(db, p["id"])
    if rec is None:
        return "no approval in the audit trail"
    for key in ("approval_sha256", "approval_params", "approval_node", "approval_expires"):
        if rec.get(key) != p[key]:
            return f"{key} differs from the approval recorded in the audit trail"
    try:
        pbmod.validate_params(pb, json.loads(p["params"]))
    except ValueError as e:
        return f"parameters fail the header: {e}"
    return None


def queue_check(db: sqlite3.Connection, key: Ed25519PrivateKey, pid: int, pb: Playbook,
                node: str, params: dict[str, str], now: float) -> str | None:
    """The header's dry run, so the person approving sees what would change; only for a
    read-only playbook: a check is still the playbook's code on the node, and nothing but a
    read-only diagnostic runs there before a person approves."""
    if not pb.check or pb.risk != "read-only":
        return None
    return enqueue(db, key, pid=pid, node=node, mode="check", pb=pb, params=params,
                   expires=now + PROBE_TTL, now=now)


JOBS_PER_POLL = 20  # what the agent takes per poll; the rest stay queued for the next one


def pending(db: sqlite3.Connection, node: str, now: float) -> list[dict]:
    return [
        {"id": r[0], "payload": r[1], "signature": r[2]}
        for r in db.execute(
            "SELECT id, payload, signature FROM jobs WHERE node = ? AND state = 'queued' AND expires > ?"
            " ORDER BY created LIMIT ?",
            (node, now, JOBS_PER_POLL),
        )
    ]


def mark_delivered(db: sqlite3.Connection, node: str, ids: list[str], now: float) -> None:
    db.executemany(
        "UPDATE jobs SET state = 'delivered', delivered = ? WHERE id = ? AND node = ? AND state = 'queued'",
        [(now, i, node) for i in ids],
    )


def unmark_delivered(db: sqlite3.Connection, node: str, ids: list[str]) -> None:
    """Back to queued: the poll they were handed to hung up before the answer went out."""
    db.executemany(
        "UPDATE jobs SET state = 'queued', delivered = NULL WHERE id = ? AND node = ? AND state = 'delivered'",
        [(i, node) for i in ids],
    )


def record_result(db: sqlite3.Connection, node: str, ev: Any, books: dict[str, Playbook],
                  key: Ed25519PrivateKey, verify_window: float, now: float) -> str | None:
    """Fold one JobResult into the job and its proposal. Idempotent: a result the job has
    already moved past is ignored (replays after a hub restart are harmless). A node can only
    report on its own jobs."""
    cur = db.execute("SELECT id, proposal_id, mode, state FROM jobs WHERE id = ? AND node = ?", (ev.job_id, node))
    job = cur.fetchone()
    if job is None:
        log.warning("node %s reported on unknown job %r", node, ev.job_id)
        return None
    job_id, pid, mode, state = tuple(job)
    if state in FINAL or (ev.status == "running" and state == "running"):
        return None
    out = (ev.output or "")[-65536:]
    if ev.status == "running":
        db.execute("UPDATE jobs SET state = 'running' WHERE id = ?", (job_id,))
    else:
        db.execute(
            "UPDATE jobs SET state = ?, finished = ?, exit_code = ?, output = ?, reason = ?, duration_ms = ? WHERE id = ?",
            (ev.status, now, ev.exit_code, out, ev.reason, ev.duration_ms, job_id),
        )
    audit.append(db, f"node:{node}", f"job {mode} {ev.status}", pid, {
        "job_id": job_id, "exit_code": ev.exit_code, "reason": ev.reason,
        "output_sha256": hashlib.sha256(out.encode()).hexdigest()}, now)
    if pid is None or mode == "check":
        return ev.status
    p = proposals.get(db, pid)
    actor = f"node:{node}"
    if mode == "run" and p["job_id"] == job_id:
        if ev.status == "running" and p["state"] == "dispatched":
            transition(db, pid, "running", actor, None, now)
        elif ev.status == "succeeded" and p["state"] in ("dispatched", "running"):
            transition(db, pid, "succeeded", actor, f"exit {ev.exit_code}", now,
                       exit_code=ev.exit_code, output=out)
            pb = books.get(p["playbook"])
            if p["risk"] == "read-only":  # a diagnostic changed nothing: nothing to verify
                transition(db, pid, "diagnosed", "hub", "read-only: its output is evidence", now)
            elif pb is not None and pb.verify and pb.sha256 == p["approval_sha256"]:
                vid = enqueue(db, key, pid=pid, node=node, mode="verify", pb=pb,
                              params=json.loads(p["params"]), expires=now + PROBE_TTL, now=now)
                db.execute("UPDATE proposals SET verify_job_id = ? WHERE id = ?", (vid, pid))
            else:
                db.execute("UPDATE proposals SET verify_deadline = ? WHERE id = ?", (now + verify_window, pid))
        elif ev.status in ("failed", "refused", "timeout") and p["state"] in ("dispatched", "running"):
            why = {"refused": f"refused by the node: {ev.reason}", "timeout": "timed out on the node"}.get(
                ev.status, f"exit {ev.exit_code}")
            transition(db, pid, "failed", actor, why, now, exit_code=ev.exit_code, output=out, reason=why)
    elif mode == "verify" and p["verify_job_id"] == job_id and p["state"] == "succeeded":
        if ev.status == "succeeded":
            db.execute("UPDATE proposals SET verify_output = ?, verify_deadline = ? WHERE id = ?",
                       (out, now + verify_window, pid))
        elif ev.status != "running":
            why = f"verify step {ev.status}" + (f": {ev.reason}" if ev.reason else f" (exit {ev.exit_code})")
            db.execute("UPDATE proposals SET verify_output = ? WHERE id = ?", (out, pid))
            transition(db, pid, "not verified", actor, why, now, reason=why)
    return ev.status


def alert_state(db: sqlite3.Connection, alert_id: int | None) -> str | None:
    """The alert's state from the rules engine's table, or None when there is none to ask."""
    if alert_id is None:
        return None
    try:
        row = db.execute("SELECT state FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    except sqlite3.OperationalError:  # no rules engine (yet): nothing to re-check
        return None
    return row[0] if row else None


Verdict = Callable[[int, float, float], tuple[str, float | None]]


def settle(db: sqlite3.Connection, now: float, verdict: Verdict | None = None) -> list[tuple[int, str]]:
    """Succeeded fixes whose verify step passed. Verified as soon as the rule's own condition
    cleared on data newer than the fix (``verdict``, the rules engine's answer; a hold such as
    ``keep_firing_for`` does not count) or the alert resolved; not verified if the condition
    still holds when the window closes. A windowed rule extends the window to one whole
    window of fresh data."""
    out = []
    rows = db.execute(
        "SELECT p.id, p.alert_id, p.verify_deadline, (SELECT max(t.ts) FROM proposal_transitions t"
        " WHERE t.proposal_id = p.id AND t.to_state = 'succeeded')"
        " FROM proposals p WHERE p.state = 'succeeded' AND p.verify_deadline IS NOT NULL"
    ).fetchall()
    for pid, alert_id, deadline, fixed_at in rows:
        st = alert_state(db, alert_id)
        said, until = ("unknown", None)
        if verdict is not None and alert_id is not None and st not in (None, "resolved"):
            try:
                said, until = verdict(alert_id, fixed_at or now, now)
            except Exception:  # noqa: BLE001 - no verdict: the alert's state decides
                log.exception("proposal %s: condition verdict failed", pid)
        why = None
        if said == "cleared":
            why, to = "the rule's condition cleared on data since the fix", "verified"
        elif st is None:
            why, to = "verify step passed; no alert to re-check", "verified"
        elif st == "resolved":
            why, to = "the alert resolved", "verified"
        elif until is not None and until + 1.0 > deadline:
            db.execute("UPDATE proposals SET verify_deadline = ? WHERE id = ?", (until + 1.0, pid))
        elif deadline < now:
            if said == "quiet":
                why, to = "no new occurrence since the fix", "verified"
            elif said == "holds":
                why, to = f"the rule's condition still holds on data since the fix (alert {st})", "not verified"
            else:
                why, to = f"no data since the fix showed the condition cleared; the alert is still {st}", \
                    "not verified"
        if why is None:
            continue
        if to == "verified":
            transition(db, pid, to, "hub", why, now)
        else:
            transition(db, pid, to, "hub", why, now, reason=why)
        out.append((pid, to))
    return out


def expire_jobs(db: sqlite3.Connection, now: float) -> None:
    """Run jobs nobody picked up (or reported on) before they expired fail their proposal."""
    for job_id, pid in db.execute(
        "SELECT id, proposal_id FROM jobs WHERE mode = 'run' AND state IN ('queued', 'delivered') AND expires < ?",
        (now,),
    ).fetchall():
        db.execute("UPDATE jobs SET state = 'failed', reason = 'expired before the node ran it' WHERE id = ?", (job_id,))
        if pid is not None and proposals.get(db, pid)["state"] == "dispatched":
            transition(db, pid, "failed", "hub", "the node did not run the job before it expired",
                       now, reason="job expired undelivered")
    # A node that died mid-run (kill -9, power loss) never reports: after the longest a
    # playbook may run, the run is failed so the alert can be proposed for again.
    for job_id, pid in db.execute(
        "SELECT id, proposal_id FROM jobs WHERE mode = 'run' AND state = 'running' AND expires + ? < ?",
        (pbmod.MAX_TIMEOUT, now),
    ).fetchall():
        db.execute("UPDATE jobs SET state = 'failed', reason = 'the node never reported a result' WHERE id = ?", (job_id,))
        if pid is not None and proposals.get(db, pid)["state"] == "running":
            transition(db, pid, "failed", "hub", "the node never reported a result (it died mid-run?)",
                       now, reason="no result from the node")
    for job_id, pid, mode in db.execute(
        "SELECT id, proposal_id, mode FROM jobs WHERE mode != 'run' AND state IN ('queued', 'delivered') AND expires < ?",
        (now,),
    ).fetchall():
        db.execute("UPDATE jobs SET state = 'failed', reason = 'expired before the node ran it' WHERE id = ?", (job_id,))
        if mode == "verify" and pid is not None:
            p = proposals.get(db, pid)
            if p["state"] == "succeeded" and p["verify_job_id"] == job_id:
                why = "the verify step did not run before it expired (node away?)"
                transition(db, pid, "not verified", "hub", why, now, reason=why)


def validate_candidate(books: dict[str, Playbook], cand: Any) -> tuple[Playbook, dict[str, str]]:
    if not isinstance(cand, dict):
        raise ValueError("candidate is not a mapping")
    pb = books.get(str(cand.get("playbook")))
    if pb is None:
        raise ValueError(f"playbook {cand.get('playbook')!r} is not installed on the hub")
    return pb, pbmod.validate_params(pb, cand.get("params") or {})
