"""What the home page shows: every node with its headline numbers, firing alerts, proposals
waiting for a person, and the fleet's latest changes. Read-only, one connection."""

from __future__ import annotations

import sqlite3

from hub.queries import ago

HEADLINE = ("cpu_percent", "memory_used_ratio", "load1", "disk_used_ratio")


def _latest(db: sqlite3.Connection) -> dict[str, dict[str, float]]:
    """node -> {metric: latest value}; the fullest mount for disk_used_ratio. One seek per
    series on the (series, ts) primary key, falling back to the minute tier for a node whose
    raw samples have expired (offline for a day)."""
    out: dict[str, dict[str, float]] = {}
    marks = ",".join("?" * len(HEADLINE))
    for sid, node, name, labels in db.execute(
        f"SELECT id, node, name, labels FROM series WHERE name IN ({marks})", HEADLINE
    ):
        row = db.execute("SELECT value FROM samples WHERE series = ? ORDER BY ts DESC LIMIT 1",
                         (sid,)).fetchone()
        if row is None:
            row = db.execute("SELECT avg FROM samples_1m WHERE series = ? ORDER BY ts DESC LIMIT 1",
                             (sid,)).fetchone()
        if row is None:
            continue
        vals = out.setdefault(node, {})
        if name == "disk_used_ratio":
            if row[0] >= vals.get(name, -1):
                vals[name] = row[0]
                vals["fullest_mount"] = labels
        else:
            vals[name] = row[0]
    return out


def nodes(db: sqlite3.Connection, now: float, offline_after: float) -> list[dict]:
    latest = _latest(db)
    open_alerts = dict(db.execute(
        "SELECT node, count(*) FROM alerts WHERE state = 'firing' GROUP BY node").fetchall())
    out = []
    for r in db.execute("SELECT name, last_seen, address, agent_version FROM nodes ORDER BY name"):
        seen = r["last_seen"]
        state = "never seen" if seen is None else ("online" if now - seen <= offline_after else "offline")
        out.append({"name": r["name"], "state": state, "last_seen": seen,
                    "last_seen_ago": ago(None if seen is None else now - seen),
                    "address": r["address"], "agent_version": r["agent_version"],
                    "alerts": open_alerts.get(r["name"], 0), **latest.get(r["name"], {})})
    return out


def firing_alerts(db: sqlite3.Connection, limit: int = 50) -> list[dict]:
    return [dict(r) for r in db.execute(
        "SELECT id, rule, node, severity, summary, value, coalesce(firing_at, first_seen) AS since"
        " FROM alerts WHERE state = 'firing'"
        " ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, since DESC"
        " LIMIT ?", (limit,))]


def awaiting_approval(db: sqlite3.Connection, limit: int = 50) -> list[dict]:
    return [dict(r) for r in db.execute(
        "SELECT id, created, node, rule, playbook, risk, params, why FROM proposals"
        " WHERE state = 'proposed' ORDER BY created DESC LIMIT ?", (limit,))]


def recent_changes(db: sqlite3.Connection, since: float, limit: int = 25) -> list[dict]:
    return [dict(r) for r in db.execute(
        "SELECT node, ts, kind, action, subject, detail FROM changes WHERE ts >= ?"
        " ORDER BY ts DESC LIMIT ?", (since, limit))]
