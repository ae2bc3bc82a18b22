"""A bounded context for the model: the alert, related recent events, twin facts about the
node and the top knowledge-base passages.

Every item has a short stable id (A<alert id>, E<event id>, F<n>, K<passage id>) the model
may cite, and all of it is rendered inside one DATA block that the system prompt tells the
model never to follow as instructions: log lines and file diffs are written by whoever
controls the node, so they are untrusted text. Sizes are bounded per item and in total.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

ITEM_CHARS = 220
MAX_EVENTS = 12
MAX_KB = 3
WINDOW_S = 3600.0

# Events that explain incidents, most telling first; bulky kinds (metrics, processes,
# inventories) reach the model through the twin facts instead.
EVENT_KINDS = ("service", "log", "package", "file", "command", "device", "job_result",
               "pending_updates", "notice", "dropped")

_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass
class Item:
    id: str
    kind: str  # alert, cause (an event the rule linked), telling (see telling_events), event, fact, kb
    text: str
    ts: float | None = None
    shown: str | None = None  # what the model is shown, when less than text (see build)

    @property
    def line(self) -> str:
        return f"[{self.id}] {self.shown if self.shown is not None else self.text}"


@dataclass
class Context:
    items: list[Item] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.items]

    def _kept(self, max_chars: int) -> list[Item]:
        """Alert, facts and notes first; then as many events as fit, newest kept."""
        kept: list[Item] = []
        used = 0
        for it in self.items:
            if it.kind != "event":
                n = len(it.line) + 1
                if used + n > max_chars and kept:
                    continue
                kept.append(it)
                used += n
        events = [it for it in self.items if it.kind == "event"]
        chosen = []
        for it in reversed(events):
            n = len(it.line) + 1
            if used + n > max_chars:
                break
            chosen.append(it)
            used += n
        return kept + chosen[::-1]

    def render(self, max_chars: int = 3600) -> str:
        """The DATA block; items that do not fit are left out whole, never cut mid-way."""
        return "\n".join(it.line for it in self._kept(max_chars))

    def shown_ids(self, max_chars: int = 3600) -> list[str]:
        return [it.id for it in self._kept(max_chars)]


def clean(text: Any, limit: int = ITEM_CHARS) -> str:
    """One line, no control characters, no brackets that could fake an item id, bounded."""
    s = _CTRL.sub(" ", str(text)).replace("[", "(").replace("]", ")")
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def summarize_event(kind: str, d: dict) -> str:
    """One line for an event, from its JSON."""
    g = d.get
    if kind == "service":
        return f"service {g('unit')} {g('previous') or '?'} -> {g('active')} result={g('result')} restarts={g('restarts')}"
    if kind == "log":
        return f"log {g('program') or g('unit') or g('source')} sev={g('severity')}: {g('message')}"
    if kind == "package":
        return f"package {g('action')} {g('name')} {g('old_version') or ''} -> {g('version') or ''}"
    if kind == "file":
        return f"file {g('action')} {g('path')} size={g('size')}"
    if kind == "command":
        return f"command by {g('user')} in {g('cwd')}: {g('command')} (exit {g('exit_code')})"
    if kind == "device":
        return f"device {g('action')} {g('subsystem')} {g('dev_node') or g('sys_path')} {g('vendor') or ''} {g('model') or ''}"
    if kind == "job_result":
        return f"job {g('playbook')} {g('status')} exit={g('exit_code')}: {g('output', '')}"
    if kind == "pending_updates":
        ups = g("updates") or []
        sec = sum(1 for u in ups if isinstance(u, list) and len(u) > 3 and u[3])
        return f"{len(ups)} pending updates ({sec} security) via {g('manager')}"
    if kind == "notice":
        return f"agent notice {g('level')} {g('source')}: {g('message')}"
    if kind == "dropped":
        return f"agent dropped {g('count')} events: {g('reason')}"
    return f"{kind} {json.dumps(d)[:150]}"


ALERT_FIELDS = ("rule", "name", "alertname", "node", "severity", "state", "transition", "value",
                "summary", "description", "labels", "annotations")


def alert_text(alert: dict, fields: tuple[str, ...] = ALERT_FIELDS) -> str:
    parts = []
    for k in fields:
        v = alert.get(k)
        if v is None or v in ("", "{}", "[]") or not isinstance(v, str | int | float | dict | list):
            continue
        if isinstance(v, dict | list):
            v = json.dumps(v, sort_keys=True)
        parts.append(f"{k}={v}")
    return "alert " + " ".join(parts)


def alert_ts(alert: dict) -> float:
    for k in ("firing_at", "pending_at", "first_seen", "last_seen", "ts"):
        v = alert.get(k)
        if isinstance(v, int | float):
            return float(v)
    return time.time()


def _rows(db: sqlite3.Connection, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    """A query that may name a table another feature has not created yet."""
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError as e:
        log.debug("context query skipped: %s", e)
        return []


def _event_item(r: sqlite3.Row | dict[str, Any]) -> Item | None:
    try:
        d = json.loads(r["data"])
    except (json.JSONDecodeError, TypeError):
        return None
    if not isinstance(d, dict):
        return None
    return Item(f"E{r['id']}", "event", clean(summarize_event(r["kind"], d)), r["ts"])


def cause_events(db: sqlite3.Connection, alert_id: Any, limit: int = 6) -> list[Item]:
    """The events the rules engine linked to the alert (alert_events), newest first."""
    if alert_id is None:
        return []
    rows = _rows(db,
        "SELECT e.id, e.ts, e.kind, e.data FROM alert_events a JOIN events_full e ON e.id = a.event_id"
        " WHERE a.alert_id = ? AND e.kind NOT IN ('metrics', 'processes', 'inventory', 'package_inventory')"
        " ORDER BY e.id DESC LIMIT ?", (alert_id, limit))
    items = [it for it in map(_event_item, rows) if it is not None]
    for it in items:
        it.kind = "cause"  # kept ahead of other events when the context is cut
    return items[::-1]


def recent_events(db: sqlite3.Connection, node: str | None, until: float, window: float = WINDOW_S,
                  limit: int = MAX_EVENTS) -> list[Item]:
    if not node:
        return []
    marks = ",".join("?" * len(EVENT_KINDS))
    rows = _rows(db,
        f"SELECT id, ts, kind, data FROM events_full WHERE node = ? AND kind IN ({marks})"
        " AND ts BETWEEN ? AND ? ORDER BY ts DESC, id DESC LIMIT ?",
        (node, *EVENT_KINDS, until - window, until + 60, limit * 4))
    items = []
    for r in rows:
        try:
            d = json.loads(r["data"])
        except (json.JSONDecodeError, TypeError):
            continue
        # Routine logs (info and below) crowd out what matters: keep only warnings and worse.
        if r["kind"] == "log" and isinstance(d.get("severity"), int) and d["severity"] > 4:
            continue
        items.append(Item(f"E{r['id']}", "event", clean(summarize_event(r["kind"], d)), r["ts"]))
        if len(items) >= limit:
            break
    items.reverse()  # oldest first reads as a timeline
    return items


TELLING_S = 86400.0


def telling_events(db: sqlite3.Connection, node: str | None, until: float, words: list[str],
                   limit: int = 3) -> list[Item]:
    """Older or routine (info) events that name a culprit (guards.CULPRITS) or the alert's own
    subject (its label values): a journald "System Journal is 11.9G" line two hours before a
    disk alert is the evidence, though recent_events leaves it out."""
    from hub.brain.guards import CULPRITS

    if not node:
        return []
    rows = _rows(db, "SELECT id, ts, kind, data FROM events_full WHERE node = ? AND kind IN ('log', 'file', 'command')"
                 " AND ts BETWEEN ? AND ? ORDER BY ts DESC, id DESC LIMIT 400", (node, until - TELLING_S, until + 60))
    pats = [p for p, _ in CULPRITS] + [re.compile(re.escape(w)) for w in words if len(w) >= 4]
    items: list[Item] = []
    for r in rows:
        try:
            text = summarize_event(r["kind"], json.loads(r["data"]))
        except (json.JSONDecodeError, TypeError):
            continue
        if any(p.search(text) for p in pats):
            items.append(Item(f"E{r['id']}", "telling", clean(text), r["ts"]))
            if len(items) >= limit:
                break
    items.reverse()
    return items


def twin_facts(db: sqlite3.Connection, node: str | None) -> list[str]:
    """Current state of the node, as short sentences."""
    if not node:
        return []
    from hub.errors import NotFound
    from hub.twin import Twin

    try:
        twin = Twin(db, node)
    except (NotFound, sqlite3.OperationalError):
        return []
    facts: list[str] = []
    inv = twin.inventory()
    if inv:
        mem = f"{inv['memory_bytes'] / 2**30:.1f} GiB" if inv["memory_bytes"] else "?"
        facts.append(f"node {node}: {inv['os']}, kernel {inv['kernel']}, {inv['cpu_count']} cpus, {mem} memory")
    fullest = sorted((m for m in twin.mounts() if m["used_ratio"] is not None and m["total_bytes"]),
                     key=lambda m: -m["used_ratio"])[:3]
    for m in fullest:
        facts.append(f"mount {m['mountpoint']} ({m['fstype']}) {100.0 * m['used_ratio']:.0f}% used"
                     f" of {m['total_bytes'] / 2**30:.1f} GiB")
    for r in _rows(db,
            "SELECT name, labels, value FROM metrics_latest WHERE node = ? AND name IN"
            " ('disk_used_ratio', 'memory_used_ratio', 'swap_used_ratio', 'load1', 'cpu_percent')"
            " ORDER BY name, labels LIMIT 8", (node,)):
        facts.append(f"metric {r['name']}{{{r['labels']}}} = {r['value']:.3g}" if r["labels"]
                     else f"metric {r['name']} = {r['value']:.3g}")
    failed = [s["unit"] for s in twin.services(failed=True, limit=6)]
    if failed:
        facts.append("failed units: " + ", ".join(sorted(failed)))
    pending = twin.pending_counts()
    if pending["total"]:
        facts.append(f"{pending['total']} pending package updates ({pending['security']} security)")
    for p in twin.processes(limit=3):
        facts.append(f"top process {p['name']} cpu {p['cpu_percent']:.0f}% rss {p['rss_bytes'] / 2**20:.0f} MiB")
    return facts


def kb_passages(db: sqlite3.Connection, query: str, limit: int = MAX_KB) -> list[Item]:
    """Top knowledge-base passages (issue 7's hub.kb.search), if that feature is installed.

    Integration point: hub.kb.search(db, query, limit) -> [{passage_id, title, snippet, ...}].
    """
    try:
        from hub import kb
        search = kb.search
    except (ImportError, AttributeError):
        return []
    q = " ".join(re.findall(r"[A-Za-z0-9_]{3,}", query))[:200]
    if not q:
        return []
    try:
        hits = search(db, q, limit, highlight=("", ""))
    except (sqlite3.Error, ValueError, TypeError, LookupError) as e:
        log.info("knowledge base search failed, context built without it: %s", e)
        return []
    items = []
    for h in list(hits or [])[:limit]:
        h = h if isinstance(h, dict) else getattr(h, "__dict__", {})
        pid = h.get("passage_id", h.get("id"))
        text = h.get("snippet") or h.get("text") or h.get("body") or ""
        title = h.get("title") or ""
        if pid is None:
            continue
        items.append(Item(f"K{pid}", "kb", clean(f"note {title}: {text}", 300)))
    return items


def build(db: sqlite3.Connection | None, alert: dict, *, max_events: int = MAX_EVENTS) -> Context:
    """The context for one alert. db may be None (no store): the alert alone."""
    ctx = Context()
    aid = alert.get("id")
    ctx.items.append(Item(f"A{aid}" if aid is not None else "A0", "alert", clean(alert_text(alert), 400),
                          alert_ts(alert)))
    if db is None:
        return ctx
    node = alert.get("node")
    ctx.items += [Item(f"F{i + 1}", "fact", clean(f)) for i, f in enumerate(twin_facts(db, node))]
    ctx.items += kb_passages(db, alert_text(alert))
    causes = cause_events(db, aid)
    seen = {it.id for it in causes}
    recent = [it for it in recent_events(db, node, alert_ts(alert), limit=max_events) if it.id not in seen]
    seen |= {it.id for it in recent}
    labels: dict = alert["labels"] if isinstance(alert.get("labels"), dict) else {}
    telling = [it for it in telling_events(db, node, alert_ts(alert), [str(v) for v in labels.values()])
               if it.id not in seen]
    ctx.items += causes + sorted(telling + recent, key=lambda it: it.ts or 0)
    return ctx
