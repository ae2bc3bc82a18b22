"""``homelab-hub explain ALERT_ID``: the story of one alert, for a person.

What happened (a timeline of the alert's own events and what else happened on the node
around it), what was proposed and by whom, what the model concluded and why, and the text
of every item it cited — resolved from the prompt it was actually shown, so the account
matches the decision even if the data has since been rolled away.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from hub.brain.context import EVENT_KINDS, _event_item, alert_ts, clean
from hub.errors import NotFound

TIMELINE_MAX = 40
BEFORE_S = 3600.0


def _rows(db: sqlite3.Connection, sql: str, args: tuple = ()) -> list[dict]:
    try:
        return [dict(r) for r in db.execute(sql, args)]
    except sqlite3.OperationalError:
        return []  # a feature (proposals, jobs) not installed on this hub


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def cited(prompt: str, ids: list[str]) -> dict[str, str]:
    """The text the model was shown for each id it cited ("[E12] service ..." lines)."""
    out = {}
    for i in ids:
        m = re.search(rf"^\[{re.escape(str(i))}\] (.*)$", prompt or "", re.M)
        out[str(i)] = m.group(1) if m else "(not in the prompt)"
    return out


def explain(alert_id: int, db_path: Path | str) -> dict:
    from hub.store import connect

    if not Path(db_path).exists():
        raise NotFound(f"no hub database at {db_path}")
    db = connect(db_path, readonly=True)
    try:
        alerts = _rows(db, "SELECT * FROM alerts WHERE id = ?", (alert_id,))
        if not alerts:
            raise NotFound(f"no alert with id {alert_id}")
        alert = alerts[0]
        for k in ("labels", "annotations", "fields", "propose", "key"):
            if isinstance(alert.get(k), str):
                try:
                    alert[k] = json.loads(alert[k])
                except json.JSONDecodeError:
                    pass
        start = alert_ts(alert)
        end = alert.get("resolved_at") or time.time()
        timeline: list[dict] = []
        for label, ts in (("pending", alert.get("pending_at")), ("firing", alert.get("firing_at")),
                          ("resolved", alert.get("resolved_at"))):
            if ts:
                timeline.append({"ts": ts, "id": f"A{alert_id}", "what": f"alert {alert['rule']} {label}"})
        causes = _rows(db,
            "SELECT e.id, e.ts, e.kind, e.data FROM alert_events a JOIN events_full e ON e.id = a.event_id"
            " WHERE a.alert_id = ? ORDER BY e.ts LIMIT ?", (alert_id, TIMELINE_MAX))
        marks = ",".join("?" * len(EVENT_KINDS))
        around = _rows(db,
            f"SELECT id, ts, kind, data FROM events_full WHERE node = ? AND kind IN ({marks}) AND ts BETWEEN ? AND ?"
            " ORDER BY ts DESC LIMIT ?", (alert.get("node"), *EVENT_KINDS, start - BEFORE_S, end, TIMELINE_MAX))
        seen = set()
        for r, cause in [(r, True) for r in causes] + [(r, False) for r in around]:
            if r["id"] in seen:
                continue
            seen.add(r["id"])
            it = _event_item(r)
            if it is not None:
                timeline.append({"ts": r["ts"], "id": it.id, "what": it.text, "cause": cause})
        timeline.sort(key=lambda x: (x["ts"], x["id"]))
        proposals = _rows(db,
            "SELECT id, state, playbook, params, risk, chosen_by, rationale, evidence, decision_id, why,"
            " created, approved_by, exit_code FROM proposals WHERE alert_id = ? ORDER BY id", (alert_id,))
        for p in proposals:
            p["params"] = json.loads(p["params"] or "{}")
            p["evidence"] = json.loads(p["evidence"] or "[]")
            for t in _rows(db, "SELECT ts, to_state, actor, note FROM proposal_transitions WHERE proposal_id = ?"
                           " ORDER BY id", (p["id"],)):
                timeline.append({"ts": t["ts"], "id": f"P{p['id']}",
                                 "what": f"proposal {p['id']} ({p['playbook']}) -> {t['to_state']} by {t['actor']}"
                                         + (f": {t['note']}" if t["note"] else "")})
        decisions = _rows(db, "SELECT * FROM brain_decisions WHERE alert_id = ? ORDER BY id", (alert_id,))
        for d in decisions:
            d["parsed"] = json.loads(d["parsed"] or "null")
            d["context_ids"] = json.loads(d["context_ids"] or "[]")
            ev = (d["parsed"] or {}).get("evidence") or []
            d["cited"] = cited(d["prompt"], ev)
        timeline.sort(key=lambda x: (x["ts"], x["id"]))
    finally:
        db.close()
    return {"alert": alert, "timeline": timeline[-TIMELINE_MAX * 2:], "proposals": proposals, "decisions": decisions}


def render(ex: dict) -> str:
    a = ex["alert"]
    out = [f"Alert {a['id']}: {a['rule']} on {a.get('node') or '-'} — {a.get('severity')}, now {a.get('state')}",
           f"  {clean(a.get('summary') or '', 500)}".rstrip(),
           f"  first seen {_when(a.get('first_seen'))}, last seen {_when(a.get('last_seen'))}, {a.get('count')} times",
           "", "What happened:"]
    for t in ex["timeline"]:
        mark = "*" if t.get("cause") else " "
        out.append(f" {mark}{_when(t['ts'])}  [{t['id']}] {clean(t['what'], 300)}")
    if not ex["timeline"]:
        out.append("  (no events recorded around it)")
    out += ["", "What was proposed:"]
    for p in ex["proposals"]:
        params = " ".join(f"{k}={v}" for k, v in p["params"].items())
        out.append(f"  proposal {p['id']}: {p['playbook']} {params} (risk {p['risk']}, chosen by {p['chosen_by']},"
                   f" {p['state']})")
    if not ex["proposals"]:
        out.append("  nothing")
    out += ["", "What the brain concluded:"]
    for d in ex["decisions"]:
        parsed: dict[str, Any] = d["parsed"] or {}
        who = f"model {Path(d['model']).name} (sha256 {str(d['model_sha256'])[:12]})" if d["model"] else "no model"
        out.append(f"  decision {d['id']} at {_when(d['ts'])} by {who}: {d['outcome']}, {d['latency_ms']} ms")
        out.append(f"    chose {parsed.get('playbook') or 'nothing'} {json.dumps(parsed.get('params') or {})}")
        if parsed.get("rationale"):
            out.append(f"    because: {clean(parsed['rationale'], 300)}")
        for cid, text in d["cited"].items():
            out.append(f"    cited [{cid}] {clean(text, 300)}")
        out.append(f"    shown {len(d['context_ids'])} items: {' '.join(d['context_ids'][:20])}")
    if not ex["decisions"]:
        out.append("  the brain was not asked about this alert")
    return "\n".join(out)
