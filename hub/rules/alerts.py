"""Alerts in SQLite: storing the engine's lifecycle records and reading them back.

``apply`` runs in the writer thread inside one transaction per batch of records. Each
alert listener (``hub.keys.ALERT_LISTENERS``) runs inside a savepoint, so a listener that
fails is rolled back alone and logged; the alert itself is still recorded.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

UPSERT = (
    "INSERT INTO alerts (id, rule, key, node, state, severity, value, summary, labels, annotations,"
    " fields, propose, first_seen, last_seen, count, pending_at, firing_at, resolved_at)"
    " VALUES (:id, :rule, :key_json, :node, :state, :severity, :value, :summary, :labels_json,"
    " :annotations_json, :fields_json, :propose_json, :first_seen, :last_seen, :count, :pending_at,"
    " :firing_at, :resolved_at)"
    " ON CONFLICT (id) DO UPDATE SET state = excluded.state, value = excluded.value,"
    " summary = coalesce(excluded.summary, summary), labels = excluded.labels,"
    " annotations = excluded.annotations, propose = excluded.propose, last_seen = excluded.last_seen,"
    " count = excluded.count, pending_at = excluded.pending_at, firing_at = excluded.firing_at,"
    " resolved_at = excluded.resolved_at"
)
LINK = "INSERT OR IGNORE INTO alert_events (alert_id, event_id) VALUES (?, ?)"
JSON_COLUMNS = ("key", "labels", "annotations", "fields", "propose")


def _row(rec: dict) -> dict:
    ann = rec.get("annotations") or {}
    return {
        **rec,
        "key_json": json.dumps(rec["key"]),
        "labels_json": json.dumps(rec.get("labels") or {}, sort_keys=True),
        "annotations_json": json.dumps(ann, sort_keys=True),
        "fields_json": json.dumps(rec.get("fields") or {}, default=str),
        "propose_json": json.dumps(rec.get("propose") or [], default=str),
        "summary": ann.get("summary"),
    }


def apply(db: sqlite3.Connection, records: list[dict], listeners: Iterable[Callable],
          rules: dict[str, Any]) -> None:
    """Store records (already in the writer's transaction) and tell listeners of transitions."""
    db.executemany(UPSERT, [_row(r) for r in records])
    links = [(r["id"], e) for r in records for e in r["events"]]
    if links:
        db.executemany(LINK, links)
    for rec in records:
        if rec["transition"] is None:
            continue
        alert = {**rec, "rule": rules.get(rec["rule"]), "rule_name": rec["rule"]}
        for listener in listeners:
            db.execute("SAVEPOINT alert_listener")
            try:
                listener(db, alert)
            except Exception:
                log.exception("alert listener %r failed on alert %s", listener, rec["id"])
                db.execute("ROLLBACK TO alert_listener")
            db.execute("RELEASE alert_listener")


def decode(row: sqlite3.Row) -> dict:
    d = dict(row)
    for c in JSON_COLUMNS:
        if isinstance(d.get(c), str):
            d[c] = json.loads(d[c])
    return d


def open_alerts(db: sqlite3.Connection) -> list[dict]:
    db.row_factory = sqlite3.Row
    return [decode(r) for r in db.execute("SELECT * FROM alerts WHERE state != 'resolved' ORDER BY id")]


def next_id(db: sqlite3.Connection) -> int:
    return (db.execute("SELECT max(id) FROM alerts").fetchone()[0] or 0) + 1


def list_alerts(path: Path, state: str | None = None, limit: int = 200) -> list[dict]:
    """For the CLI: newest first, on a read-only connection."""
    from hub.store import connect

    if not Path(path).exists():
        return []
    db = connect(path, readonly=True)
    try:
        sql = "SELECT * FROM alerts"
        args: list = []
        if state:
            sql += " WHERE state = ?"
            args.append(state)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        out = []
        for r in db.execute(sql, args):
            d = decode(r)
            d["events"] = [e[0] for e in db.execute(
                "SELECT event_id FROM alert_events WHERE alert_id = ? ORDER BY event_id LIMIT 20", (d["id"],))]
            out.append(d)
        return out
    finally:
        db.close()
