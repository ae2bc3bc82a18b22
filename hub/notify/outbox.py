"""The outbox: who is owed which notification, written inside the writer's transactions.

Rows are added by the alert listener (in the rules engine's transaction, so an alert's change
and its notifications commit together) and by ``scan_transitions`` (proposals awaiting
approval and fix outcomes, read from the append-only ``proposal_transitions`` behind a cursor
moved in the same transaction). ``hub.notify.deliver`` sends them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass, field

from hub.rules import alertmanager_payload, webhook_payload

SEVERITIES = ("info", "warning", "critical")
CHANNELS = ("apprise", "webhook", "alertmanager")
# Final states of a fix, and states that need a person: what a person is told about.
FIX_STATES = {"verified": "info", "not verified": "warning", "failed": "warning"}
ASK_STATES = ("proposed", "escalated")

INSERT = (
    "INSERT INTO notify_outbox (created, channel, target, topic, severity, node, alert_id,"
    " proposal_id, title, body, payload, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def target_id(url: str) -> str:
    """A stable name for a URL that does not reveal its secrets (Datasette shows the outbox)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 1


@dataclass
class Targets:
    apprise: list[str] = field(default_factory=list)
    webhooks: list[str] = field(default_factory=list)
    alertmanager: str | None = None
    min_severity: str = "warning"
    group_wait: float = 30.0
    generator_url: str = ""

    def by_id(self) -> dict[tuple[str, str], str]:
        out = {("apprise", target_id(u)): u for u in self.apprise}
        out.update({("webhook", target_id(u)): u for u in self.webhooks})
        if self.alertmanager:
            out[("alertmanager", target_id(self.alertmanager))] = self.alertmanager
        return out

    @property
    def enabled(self) -> bool:
        return bool(self.apprise or self.webhooks or self.alertmanager)


def _alert_text(a: dict) -> tuple[str, str]:
    rule, node = a.get("rule_name") or a.get("rule"), a.get("node") or "hub"
    ann = a.get("annotations") or {}
    if a["transition"] == "resolved":
        title = f"[resolved] {rule} on {node}"
    else:
        title = f"[{a['severity']}] {rule} on {node}"
    lines = [ann.get("summary") or f"{rule} is {a['transition']}"]
    if ann.get("description"):
        lines.append(ann["description"])
    if a.get("value") is not None:
        lines.append(f"value: {a['value']}")
    if a["transition"] == "firing" and a.get("propose"):
        lines.append("a fix will be proposed: homelab-hub proposals")
    lines.append(f"alert {a['id']}")
    return title, "\n".join(lines)


def alert_rows(t: Targets, alert: dict, now: float) -> list[tuple]:
    """The outbox rows one alert transition owes (none for pending, or a resolve nobody heard)."""
    tr = alert.get("transition")
    if tr not in ("firing", "resolved") or not alert.get("notify", True):
        return []
    if tr == "resolved" and alert.get("firing_at") is None:
        return []  # it never fired: nobody was told, nobody to untell
    sev = alert.get("severity") or "warning"
    rec = {**alert, "rule": alert.get("rule_name") or alert.get("rule")}
    title, body = _alert_text(alert)
    common = (tr, sev, alert.get("node"), alert.get("id"), None, title, body)
    rows: list[tuple] = []
    if rank(sev) >= rank(t.min_severity):
        rows += [(now, "apprise", target_id(u), *common, None, now + t.group_wait) for u in t.apprise]
    if t.webhooks:
        item = json.dumps(webhook_payload(rec), default=str)
        rows += [(now, "webhook", target_id(u), *common, item, now) for u in t.webhooks]
    if t.alertmanager:
        item = json.dumps(alertmanager_payload(rec, t.generator_url), default=str)
        rows.append((now, "alertmanager", target_id(t.alertmanager), *common, item, now))
    return rows


def listener(t: Targets):
    """An alert listener (hub.keys.ALERT_LISTENERS): runs in the writer's transaction."""
    def on_alert(db: sqlite3.Connection, alert: dict) -> None:
        rows = alert_rows(t, alert, time.time())
        if rows:
            db.executemany(INSERT, rows)
    return on_alert


PROPOSAL_SQL = (
    "SELECT t.id, t.ts, t.to_state, p.id, p.node, p.rule, p.playbook, p.params, p.why,"
    " p.reason, p.exit_code, a.severity FROM proposal_transitions t"
    " JOIN proposals p ON p.id = t.proposal_id LEFT JOIN alerts a ON a.id = p.alert_id"
    " WHERE t.id > ? ORDER BY t.id LIMIT 500"
)
STALE = 6 * 3600.0  # transitions older than this are history, not news (notify was off then)


def _proposal_text(state: str, pid: int, node: str, rule: str | None, playbook: str,
                   params: str, why: str | None, reason: str | None, exit_code) -> tuple[str, str]:
    on = f"{playbook} on {node}"
    if state == "proposed":
        return (f"[approve?] {on}",
                f"proposal {pid} for {rule or 'a request'} awaits approval: {on} {params}\n"
                f"{why or ''}\napprove: homelab-hub approve {pid}    reject: homelab-hub reject {pid}")
    if state == "escalated":
        return f"[escalated] {on}", f"proposal {pid} needs a person: {reason or why or ''}"
    detail = reason or (f"exit code {exit_code}" if exit_code is not None else "")
    return f"[fix {state}] {on}", f"proposal {pid} ({rule or '-'}): {state}. {detail}".strip()


def scan_transitions(db: sqlite3.Connection, t: Targets, now: float) -> int:
    """Queue notifications for proposal transitions past the cursor; move it. In the writer."""
    (last,) = db.execute(
        "SELECT last_id FROM notify_cursor WHERE name = 'proposal_transitions'").fetchone()
    rows = db.execute(PROPOSAL_SQL, (last,)).fetchall()
    if not rows:
        return 0
    out = []
    for tid, ts, state, pid, node, rule, playbook, params, why, reason, code, asev in rows:
        last = tid
        if ts < now - STALE:
            continue
        if state in ASK_STATES:
            topic, sev = "proposal", asev or "warning"
        elif state in FIX_STATES:
            topic, sev = "fix", max(asev or FIX_STATES[state], FIX_STATES[state], key=rank)
        else:
            continue
        if rank(sev) < rank(t.min_severity):
            continue
        title, body = _proposal_text(state, pid, node, rule, playbook, params, why, reason, code)
        out += [(now, "apprise", target_id(u), topic, sev, node, None, pid, title, body, None,
                 now + t.group_wait) for u in t.apprise]
    if out:
        db.executemany(INSERT, out)
    db.execute("UPDATE notify_cursor SET last_id = ? WHERE name = 'proposal_transitions'", (last,))
    return len(out)


def recover(db: sqlite3.Connection) -> int:
    """At start: rows caught mid-send by a crash go again (a kill -9 may repeat one message;
    a clean stop never does: it finishes the send in flight and records it)."""
    return db.execute("UPDATE notify_outbox SET state = 'pending' WHERE state = 'sending'").rowcount
