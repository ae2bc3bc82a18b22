"""Standing approvals: a person approves a bounded policy once, and matching proposals run
without a prompt (Monit's routine healing, with a person still in charge).

A policy names one playbook (bound to the script's SHA-256 when it was approved: a changed
script needs a new policy), the nodes, a bound for each parameter, the highest risk, a rate
(at most N runs per period) and an optional maintenance window. The worker approves every
matching proposal as ``policy:ID`` (the audit trail says which policy), the hub verifies it as
any other fix, and a policy whose runs end unverified twice in a row suspends itself, with a
log line and an audit row. The node's own locks still apply: a job the node refuses fails,
and counts as a run that did not verify. Destructive playbooks always need a person.

Functions take a connection inside a write transaction and never commit.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from typing import Any

from agent import playbook as pbmod
from agent.playbook import Playbook
from agent.settings import parse_duration
from hub import audit
from hub.errors import BadRequest, Conflict, NotFound
from hub.proposals import state as proposals

log = logging.getLogger(__name__)
RISK_ORDER = {"read-only": 0, "change": 1}  # destructive is never approved by a policy
SUSPEND_AFTER = 2  # unverified runs in a row
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ENDED = ("verified", "not verified", "failed", "expired", "escalated", "rejected", "diagnosed")
_WINDOW = re.compile(r"^(?:(?P<days>[a-z,]+)\s+)?(?P<h1>\d{1,2}):(?P<m1>\d{2})-(?P<h2>\d{1,2}):(?P<m2>\d{2})$")


def parse_bound(spec: str) -> tuple[str, dict]:
    """NAME=VALUE (exactly), NAME=~REGEX (the whole value), NAME=MIN..MAX (a number), NAME=*."""
    name, sep, rest = spec.partition("=")
    if not sep or not name:
        raise BadRequest(f"bad --param {spec!r}: use NAME=VALUE, NAME=~REGEX, NAME=MIN..MAX or NAME=*")
    if rest == "*":
        return name, {"any": True}
    if rest.startswith("~"):
        try:
            re.compile(rest[1:])
        except re.error as e:
            raise BadRequest(f"bad --param {spec!r}: {e}") from None
        return name, {"regex": rest[1:]}
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)\.\.(-?\d+(?:\.\d+)?)", rest)
    if m:
        lo, hi = float(m.group(1)), float(m.group(2))
        if lo > hi:
            raise BadRequest(f"bad --param {spec!r}: {lo:g} is above {hi:g}")
        return name, {"min": lo, "max": hi}
    return name, {"eq": rest}


def _fits(bound: dict, value: str) -> bool:
    if bound.get("any"):
        return True
    if "regex" in bound:
        return re.fullmatch(bound["regex"], value) is not None
    if "min" in bound:
        try:
            return bound["min"] <= float(value) <= bound["max"]
        except ValueError:
            return False
    return value == bound["eq"]


def parse_rate(spec: str) -> tuple[int, float]:
    """'2/1d': at most 2 runs per day."""
    n, sep, per = spec.partition("/")
    try:
        runs, period = int(n), parse_duration(per)
    except ValueError:
        raise BadRequest(f"bad --rate {spec!r}: use RUNS/PERIOD, e.g. 2/1d or 1/30m") from None
    if not sep or runs < 1 or period <= 0:
        raise BadRequest(f"bad --rate {spec!r}: use RUNS/PERIOD with at least one run, e.g. 2/1d")
    return runs, period


def parse_window(spec: str) -> dict:
    """'02:00-05:00' daily, or 'sat,sun 01:30-06:00'; the hub's local time; may wrap midnight."""
    m = _WINDOW.match(spec.strip().lower())
    if not m:
        raise BadRequest(f"bad --window {spec!r}: use HH:MM-HH:MM, optionally after days such as sat,sun")
    days = m.group("days").split(",") if m.group("days") else list(DAYS)
    bad = [d for d in days if d not in DAYS]
    start, end = int(m.group("h1")) * 60 + int(m.group("m1")), int(m.group("h2")) * 60 + int(m.group("m2"))
    if bad or max(start, end) >= 24 * 60 or start == end:
        raise BadRequest(f"bad --window {spec!r}: days are {', '.join(DAYS)}; times 00:00 to 23:59, start != end")
    return {"days": days, "start": start, "end": end, "spec": spec}


def in_window(win: dict | None, ts: float) -> bool:
    if win is None:
        return True
    t = time.localtime(ts)
    minute, day = t.tm_hour * 60 + t.tm_min, DAYS[t.tm_wday]
    if win["start"] < win["end"]:
        return day in win["days"] and win["start"] <= minute < win["end"]
    # wraps midnight: the part after midnight belongs to the previous day's window
    if minute >= win["start"]:
        return day in win["days"]
    return minute < win["end"] and DAYS[(t.tm_wday - 1) % 7] in win["days"]


def add(db: sqlite3.Connection, *, pb: Playbook, nodes: list[str], bounds: dict[str, dict], max_risk: str,
        rate: tuple[int, float], window: dict | None, actor: str, now: float | None = None) -> int:
    now = time.time() if now is None else now
    if max_risk not in RISK_ORDER:
        raise BadRequest(f"--max-risk {max_risk!r}: a policy allows at most read-only or change"
                         " (a destructive playbook always needs a person typing the node name)")
    if RISK_ORDER.get(pb.risk, 99) > RISK_ORDER[max_risk]:
        raise BadRequest(f"playbook {pb.name!r} is {pb.risk}, above the policy's highest risk {max_risk!r}")
    unknown = sorted(set(bounds) - set(pb.params))
    if unknown:
        raise BadRequest(f"playbook {pb.name!r} has no parameter {unknown[0]!r}"
                         f" (it declares: {', '.join(sorted(pb.params)) or 'none'})")
    missing = sorted(set(pb.params) - set(bounds))
    if missing:
        raise BadRequest(f"no bound for parameter(s) {', '.join(missing)} of {pb.name!r}: give each a --param"
                         " (NAME=VALUE, NAME=~REGEX, NAME=MIN..MAX, or NAME=* for any value the header allows)")
    if not nodes:
        raise BadRequest("a policy needs at least one --node (or --node '*' for every node)")
    cur = db.execute(
        "INSERT INTO policies (created, updated, created_by, playbook, sha256, nodes, bounds, max_risk, rate_runs,"
        " rate_period, window, state, failures) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', 0)",
        (now, now, actor, pb.name, pb.sha256, json.dumps(sorted(set(nodes))), json.dumps(bounds, sort_keys=True),
         max_risk, rate[0], rate[1], json.dumps(window) if window else None))
    pid = cur.lastrowid
    assert pid is not None
    audit.append(db, actor, "policy added", None, {
        "policy": pid, "playbook": pb.name, "sha256": pb.sha256, "nodes": sorted(set(nodes)), "bounds": bounds,
        "max_risk": max_risk, "rate": list(rate), "window": window["spec"] if window else None}, now)
    return pid


def get(db: sqlite3.Connection, pid: int) -> dict:
    cur = db.execute("SELECT * FROM policies WHERE id = ?", (pid,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no policy {pid}")
    d = dict(zip([c[0] for c in cur.description], tuple(row), strict=True))
    d["nodes"], d["bounds"] = json.loads(d["nodes"]), json.loads(d["bounds"])
    d["window"] = json.loads(d["window"]) if d["window"] else None
    return d


def all_(db: sqlite3.Connection, state: str | None = None) -> list[dict]:
    q = "SELECT id FROM policies" + (" WHERE state = ?" if state else "") + " ORDER BY id"
    return [get(db, i) for (i,) in db.execute(q, (state,) if state else ())]


def revoke(db: sqlite3.Connection, pid: int, actor: str, reason: str, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    reason = (reason or "").strip()
    if not reason:
        raise BadRequest("revoking a policy needs a reason")
    p = get(db, pid)
    if p["state"] == "revoked":
        raise Conflict(f"policy {pid} is already revoked")
    db.execute("UPDATE policies SET state = 'revoked', reason = ?, updated = ? WHERE id = ?", (reason, now, pid))
    audit.append(db, actor, "policy revoked", None, {"policy": pid, "reason": reason}, now)
    return get(db, pid)


def mismatch(pol: dict, p: dict, now: float, recent_runs: int) -> str | None:
    """Why proposal ``p`` does not fall under policy ``pol`` (None: it does)."""
    if p["playbook"] != pol["playbook"]:
        return "another playbook"
    if p["sha256"] != pol["sha256"]:
        return f"the script changed since the policy was approved ({pol['sha256'][:12]} -> {p['sha256'][:12]})"
    if "*" not in pol["nodes"] and p["node"] not in pol["nodes"]:
        return f"node {p['node']!r} is not in the policy"
    if RISK_ORDER.get(p["risk"], 99) > RISK_ORDER[pol["max_risk"]]:
        return f"risk {p['risk']} is above {pol['max_risk']}"
    params = json.loads(p["params"])
    for name, value in params.items():
        bound = pol["bounds"].get(name)
        if bound is None:
            return f"parameter {name!r} has no bound in the policy"
        if not _fits(bound, str(value)):
            return f"parameter {name}={value!r} is outside the policy's bound {bound}"
    if recent_runs >= pol["rate_runs"]:
        return f"rate: already {recent_runs} run(s) in the last {pol['rate_period']:g}s"
    if not in_window(pol["window"], now):
        return f"outside the maintenance window {pol['window']['spec']}"
    return None


def apply(db: sqlite3.Connection, books: dict[str, Playbook], now: float, *, approval_ttl: float,
          budget: int) -> list[tuple[int, int]]:
    """Approve every waiting fix that an active policy covers, as ``policy:ID``."""
    pols = all_(db, "active")
    if not pols:
        return []
    out = []
    waiting = db.execute(
        "SELECT id FROM proposals WHERE state = 'proposed' AND auto = 0"
        " AND id NOT IN (SELECT proposal_id FROM policy_runs) ORDER BY id").fetchall()
    for (pid,) in waiting:
        p = proposals.get(db, pid)
        pb = books.get(p["playbook"])
        if pb is None or pb.sha256 != p["sha256"]:
            continue
        for pol in pols:
            recent = db.execute("SELECT count(*) FROM policy_runs WHERE policy_id = ? AND started > ?",
                                (pol["id"], now - pol["rate_period"])).fetchone()[0]
            if mismatch(pol, p, now, recent) is not None:
                continue
            try:
                pbmod.validate_params(pb, json.loads(p["params"]))
            except ValueError:
                break
            try:
                r = proposals.approve(db, pid, f"policy:{pol['id']}", pb, ttl=approval_ttl, budget=budget, now=now)
            except (BadRequest, Conflict) as e:  # one odd proposal must not stop the others
                log.warning("policy %s cannot approve proposal %s: %s", pol["id"], pid, e)
                break
            if r["state"] == "approved":  # (escalated by the run budget: a person decides)
                db.execute("INSERT INTO policy_runs (proposal_id, policy_id, started) VALUES (?, ?, ?)",
                           (pid, pol["id"], now))
                out.append((pid, pol["id"]))
            break
    return out


def settle(db: sqlite3.Connection, now: float) -> list[int]:
    """Count the outcome of every ended policy run; suspend a policy after SUSPEND_AFTER runs
    in a row that did not verify. Returns the policies suspended now."""
    suspended = []
    rows = db.execute(
        "SELECT r.proposal_id, r.policy_id, p.state, p.reason FROM policy_runs r JOIN proposals p ON p.id = r.proposal_id"
        " WHERE r.outcome IS NULL AND p.state IN ({}) ORDER BY p.updated, p.id".format(",".join("?" * len(ENDED))),
        ENDED).fetchall()
    for pid, pol_id, st, reason in rows:
        db.execute("UPDATE policy_runs SET outcome = ?, ended = ? WHERE proposal_id = ?", (st, now, pid))
        pol = get(db, pol_id)
        if st == "verified":
            db.execute("UPDATE policies SET failures = 0, updated = ? WHERE id = ?", (now, pol_id))
            continue
        if st not in ("failed", "not verified"):  # it never ran (expired, escalated): no verdict on the fix
            continue
        failures = pol["failures"] + 1
        db.execute("UPDATE policies SET failures = ?, updated = ? WHERE id = ?", (failures, now, pol_id))
        if failures >= SUSPEND_AFTER and pol["state"] == "active":
            why = (f"{failures} runs in a row did not verify (last: proposal {pid} {st}"
                   + (f": {reason}" if reason else "") + "); a person has to look")
            db.execute("UPDATE policies SET state = 'suspended', reason = ? WHERE id = ?", (why, pol_id))
            audit.append(db, "hub", "policy suspended", pid, {"policy": pol_id, "reason": why}, now)
            log.warning("policy %s (%s on %s) suspended: %s", pol_id, pol["playbook"], ",".join(pol["nodes"]), why)
            suspended.append(pol_id)
    return suspended


def describe(pol: dict[str, Any]) -> str:
    bounds = ", ".join(f"{k}{_show(b)}" for k, b in sorted(pol["bounds"].items())) or "no parameters"
    win = f", window {pol['window']['spec']}" if pol["window"] else ""
    return (f"{pol['playbook']} on {', '.join(pol['nodes'])}; {bounds}; up to {pol['max_risk']};"
            f" at most {pol['rate_runs']} run(s) per {pol['rate_period']:g}s{win}")


def _show(b: dict) -> str:
    if b.get("any"):
        return "=*"
    if "regex" in b:
        return f"=~{b['regex']}"
    if "min" in b:
        return f"={b['min']:g}..{b['max']:g}"
    return f"={b['eq']}"
