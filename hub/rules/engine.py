"""The evaluation core: events in, alert lifecycle records out. No I/O, no threads.

The same ``Engine`` runs live (fed from the writer's commit subscriber by
``hub.rules.service``), in ``homelab-hub rules test`` (fed from YAML with a simulated
clock) and in the benchmark, so the tests exercise the code that runs in production.

Each rule keeps one ``Instance`` per group key (node plus the rule's ``group_by`` fields).
An instance is *active* while its condition holds; an active instance goes pending, then
firing after ``for``; an inactive one resolves after ``keep_firing_for``. ``drain()``
returns what changed since the last call, as plain dicts ready to store.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from jinja2 import TemplateError

from agent.wire import Unknown
from hub.project import split_key
from hub.rules.conditions import MISSING
from hub.rules.loader import Rule
from hub.rules.window import Window

log = logging.getLogger(__name__)
MAX_LINKED_EVENTS = 1000  # per alert: enough evidence, bounded storage
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_series: dict[str, tuple[str, dict]] = {}


def parse_series(key: str) -> tuple[str, dict]:
    hit = _series.get(key)
    if hit is None:
        name, labels = split_key(key)
        hit = (name, {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(labels)})
        if len(_series) > 100_000:  # many short-lived series: start over rather than grow
            _series.clear()
        _series[key] = hit
    return hit


def _plain(v: Any) -> Any:
    return None if v is MISSING else v


class Instance:
    __slots__ = ("rule", "key", "state", "alert_id", "active", "since", "last_true", "first_seen",
                 "last_seen", "count", "value", "extra", "event", "node", "new_events", "linked",
                 "fired_at", "window", "pending_at", "firing_at", "resolved_at", "rendered", "last_eval")

    def __init__(self, rule: Rule, key: tuple):
        self.rule, self.key = rule, key
        self.state = "inactive"
        self.alert_id: int | None = None
        self.active = False
        self.since = self.last_true = self.first_seen = self.last_seen = 0.0
        self.count = 0
        self.value: Any = None
        self.extra: dict = {}
        self.event: Any = None
        self.node: str | None = None
        self.new_events: list[int] = []
        self.linked = 0
        self.fired_at: float | None = None
        self.window: Window | None = Window() if rule.agg_fn else None
        self.pending_at: float | None = None
        self.firing_at: float | None = None
        self.resolved_at: float | None = None
        self.rendered: dict = {}
        self.last_eval = 0.0  # when the condition was last evaluated (on data, not a hold)

    def get(self, name: str) -> Any:
        for i, (g, _) in enumerate(self.rule.group_by):
            if g == name:
                return self.key[i]
        if name == "node":
            return self.node
        v = self.extra.get(name, MISSING)
        if v is MISSING and self.event is not None:
            v = getattr(self.event, name, MISSING)
        return _plain(v)


_ORDER: dict[int, int] = {}
_TAGS: dict[type, str | None] = {}


def _order(r: Rule) -> int:
    return _ORDER[id(r)]


def _equalities(where: Any, macros: dict, depth: int = 0) -> list[tuple[str, list]]:
    """Top-level ``field: value`` / ``field: [values]`` tests of a condition (through macros)."""
    out: list[tuple[str, list]] = []
    if not isinstance(where, dict) or depth > 5:
        return out
    for k, v in where.items():
        if k == "macro" and isinstance(macros.get(v), dict):
            out += _equalities(macros[v], macros, depth + 1)
        elif k not in ("all", "any", "not", "macro") and "." not in str(k):
            vals = v if isinstance(v, list) else [v]
            if vals and all(isinstance(x, str | int | float) and not isinstance(x, bool) for x in vals):
                out.append((str(k), vals))
    return out


def _plan(rules: list[Rule]) -> tuple[list[Rule], list[tuple[str, dict]]]:
    """Split a kind's rules into those every event must try and an index of rules that can
    only match when a field has one of a few values (``program: sshd``), so an event is
    tested against the rules that can match it, not all of them. File order is kept."""
    always: list[Rule] = []
    index: dict[str, dict] = {}
    for i, r in enumerate(rules):
        _ORDER[id(r)] = i
        ev = r.spec.get("event", {})
        fields = [f for f, _ in r.group_by] + [g for p in ev.get("extract", {}).values()
                                              for g in re.compile(p).groupindex]
        eqs = [(f, v) for f, v in _equalities(ev.get("where"), r.macros) if f not in fields and f != "node"]
        if not eqs:
            always.append(r)
            continue
        fld, vals = eqs[0]
        for v in vals:
            index.setdefault(fld, {}).setdefault(v, []).append(r)
    return always, list(index.items())


class Engine:
    def __init__(self, rules: Iterable[Rule], next_id: int = 1):
        self.rules = {r.name: r for r in rules}
        self.by_kind: dict[str, list[Rule]] = {}
        self.by_metric: dict[str, list[Rule]] = {}
        for r in self.rules.values():
            if r.source == "metric":
                self.by_metric.setdefault(r.metric, []).append(r)  # type: ignore[arg-type]
            elif r.source == "event":
                self.by_kind.setdefault(r.kind, []).append(r)  # type: ignore[arg-type]
        self.plans = {kind: _plan(rs) for kind, rs in self.by_kind.items()}
        self.periodic = [r for r in self.rules.values() if r.periodic]
        self.next_due: dict[str, float] = {}
        self.instances: dict[tuple[str, tuple], Instance] = {}
        self.firing: dict[str, set[Instance]] = {n: set() for n in self.rules}
        self.next_id = next_id
        self.records: list[dict] = []
        self.dirty: dict[int, Instance] = {}
        self.evaluated = 0

    # -- input ---------------------------------------------------------------------------

    def feed(self, node: str, event_id: int | None, event: Any, t: float | None = None) -> None:
        """Evaluate one committed event. ``t`` defaults to the event's own timestamp."""
        kind = _TAGS.get(type(event))
        if kind is None:  # wire.Unknown carries its kind per event; Structs per type
            cfg = getattr(event, "__struct_config__", None)
            kind = getattr(event, "kind", None) if isinstance(event, Unknown) or cfg is None else cfg.tag
            if not isinstance(event, Unknown) and cfg is not None:
                _TAGS[type(event)] = kind
        t = event.ts if t is None else t
        self.evaluated += 1
        if kind == "metrics":
            if self.by_metric:
                self._metrics(node, event_id, event, t)
            if "metrics" not in self.by_kind:
                return
        plan = self.plans.get(kind) if kind is not None else None
        if plan is None:
            return
        rules, index = plan
        if index:
            hits = None
            for fld, table in index:
                hit = table.get(getattr(event, fld, None))
                if hit:
                    hits = hit if hits is None else hits + hit
            if hits:
                rules = sorted(rules + hits, key=_order) if rules else hits
        for r in rules:
            extra = {"node": node}
            if r.where is not None and not r.where(event, extra):
                continue
            if r.extract:
                ok = True
                for get, rx in r.extract:
                    v = get(event, extra)
                    m = rx.search(v) if isinstance(v, str) else None
                    if m is None:
                        ok = False
                        break
                    extra.update(m.groupdict())
                if not ok:
                    continue
            if r.excepts and any(p(event, extra) for p in r.excepts):
                continue
            self._matched(r, node, event_id, event, extra, t)

    def _metrics(self, node: str, event_id: int | None, event: Any, t: float) -> None:
        by_metric = self.by_metric
        for key, value in event.samples.items():
            name = key[: key.find("{")] if "{" in key else key
            rules = by_metric.get(name)
            if rules is None:
                continue
            _, labels = parse_series(key)
            extra = {**labels, "node": node, "name": name, "labels": labels, "value": value}
            for r in rules:
                if r.metric_labels and any(labels.get(k) != v for k, v in r.metric_labels.items()):
                    continue
                if r.where is not None and not r.where(None, extra):
                    continue
                self._matched(r, node, event_id, None, extra, t)

    def _matched(self, r: Rule, node: str, event_id: int | None, event: Any, extra: dict, t: float) -> None:
        key = tuple(_plain(g(event, extra)) for _, g in r.group_by)
        inst = self.instances.get((r.name, key))
        if inst is None:
            if r.agg_fn is None and r.when is not None and not r.when(event, extra):
                return  # a false condition for a key we do not track: nothing to do
            inst = self.instances[(r.name, key)] = Instance(r, key)
        inst.node = node
        if r.agg_fn and inst.window is not None:  # the instance has a window iff its rule aggregates
            v = 1.0 if r.agg_field is None else _plain(r.agg_field(event, extra))
            inst.window.add(t, v, event_id)
            inst.window.expire(t - r.window)
            value = inst.window.value(r.agg_fn, t, r.window, r.horizon)
            # a copy: the caller hands the same dict (one per metric sample) to every rule,
            # and the next rule must see the sample, not this rule's aggregate
            extra = {**extra, "value": value}
            active = value is not None and (r.when is None or r.when(event, extra))
        else:
            value = extra.get("value")
            active = r.when is None or r.when(event, extra)
        if active or not inst.extra:  # an alert shows what made it true, not what ended it
            inst.value, inst.event, inst.extra = value, event, extra
        self._observe(inst, t, active, event_id)
        if r.pulse:
            inst.active = False  # an occurrence, not a state: keep_firing_for decides how long

    # -- lifecycle -----------------------------------------------------------------------

    def _observe(self, inst: Instance, t: float, active: bool, event_id: int | None) -> None:
        r = inst.rule
        inst.active = active
        inst.last_eval = max(inst.last_eval, t)
        if not active:
            if inst.state == "pending":
                self._transition(inst, "resolved", t)
            elif inst.state == "firing" and t - inst.last_true >= r.keep_firing_for:
                self._transition(inst, "resolved", t)
            return
        inst.last_true = t
        if inst.state == "inactive":
            throttled = (r.throttle and inst.fired_at is not None and inst.alert_id is not None
                         and t - inst.fired_at < r.throttle)
            if not throttled:
                inst.alert_id, self.next_id = self.next_id, self.next_id + 1
                inst.first_seen, inst.since, inst.count, inst.linked = t, t, 0, 0
                inst.pending_at = inst.firing_at = inst.resolved_at = None
                inst.state = "pending"
                if inst.window:  # the events that made the aggregate true are the evidence
                    earlier = [e for _, _, e in inst.window if e is not None and e != event_id]
                    inst.new_events.extend(earlier)
                    inst.count = len(earlier)
                if r.for_ > 0:
                    self._transition(inst, "pending", t)
        inst.count += 1
        inst.last_seen = max(inst.last_seen, t)
        if event_id is not None:
            inst.new_events.append(event_id)
        self.dirty[id(inst)] = inst
        if inst.state == "pending":
            self._maybe_fire(inst, t)

    def _maybe_fire(self, inst: Instance, t: float) -> None:
        if t - inst.since >= inst.rule.for_ and not self._inhibited(inst):
            self._transition(inst, "firing", t)

    def _inhibited(self, inst: Instance) -> bool:
        for name, equal in inst.rule.inhibited_by:
            for other in self.firing.get(name, ()):
                if all(other.get(f) == inst.get(f) for f in equal):
                    return True
        return False

    def _transition(self, inst: Instance, to: str, t: float) -> None:
        r = inst.rule
        if to == "pending":
            inst.pending_at = t
        elif to == "firing":
            inst.firing_at = inst.fired_at = t
            if inst.pending_at is None:
                inst.pending_at = inst.since
            self.firing[r.name].add(inst)
        else:
            inst.resolved_at = t
            self.firing[r.name].discard(inst)
        inst.state = to
        self.dirty[id(inst)] = inst
        self.records.append(self._record(inst, to, t))
        if to == "resolved":
            inst.state = "inactive"

    # -- time ----------------------------------------------------------------------------

    def tick(self, now: float, query: Callable[[Rule, float], list[dict]] | None = None) -> None:
        """Advance time: fire pending alerts whose ``for`` elapsed, resolve what stopped,
        expire windows, and run periodic rules that are due (``query(rule, now)`` returns rows)."""
        if query is not None:
            for r in self.periodic:
                if now >= self.next_due.get(r.name, 0.0):
                    self.next_due[r.name] = now + (r.every if r.source == "query" else min(r.absent_for / 4, 30.0) or 1.0)
                    self._periodic(r, now, query)
        dead = []
        for k, inst in self.instances.items():
            r = inst.rule
            if inst.window is not None and r.agg_fn is not None:
                if inst.window.expire(now - r.window) or r.agg_fn == "predict":
                    value = inst.extra["value"] = inst.window.value(r.agg_fn, now, r.window, r.horizon)
                    active = value is not None and (r.when is None or r.when(inst.event, inst.extra))
                    if active:
                        inst.active, inst.value = True, value
                    else:
                        self._observe(inst, now, False, None)
            if inst.state == "pending" and inst.active:
                self._maybe_fire(inst, now)
            elif inst.state == "firing" and not inst.active and now - inst.last_true >= r.keep_firing_for:
                self._transition(inst, "resolved", now)
            if (inst.state == "inactive" and not inst.window
                    and (not r.throttle or inst.fired_at is None or now - inst.fired_at >= r.throttle)):
                dead.append(k)
        for k in dead:
            del self.instances[k]

    def _periodic(self, r: Rule, now: float, query: Callable[[Rule, float], list[dict]]) -> None:
        try:
            rows = query(r, now)
        except Exception as e:  # noqa: BLE001 - one failing query must not stop the others
            log.warning("rule %s: query failed: %s", r.name, e)
            return
        seen = set()
        for row in rows:
            extra = dict(row)
            key = tuple(extra.get(g) for g, _ in r.group_by)
            seen.add(key)
            inst = self.instances.get((r.name, key))
            if inst is None:
                inst = self.instances[(r.name, key)] = Instance(r, key)
            active = r.when is None or r.when(None, extra)
            inst.node, inst.event = extra.get("node"), None
            if active:
                inst.extra, inst.value = extra, extra.get("value")
            if inst.state != "inactive" or active:
                self._observe(inst, now, active, None)
        for (name, key), inst in list(self.instances.items()):
            if name == r.name and key not in seen and inst.state != "inactive":
                self._observe(inst, now, False, None)

    # -- reload ----------------------------------------------------------------------------

    def reloaded(self, rules: Iterable[Rule], now: float) -> Engine:
        """A new engine for a new rule set that keeps what it can: the instances (windows,
        open alerts, throttles) of every rule whose definition is unchanged. Open alerts of a
        rule that changed or went away are resolved (recorded, so listeners hear it); a
        changed rule starts afresh and fires again under its new definition if it holds."""
        new = Engine(rules, next_id=self.next_id)
        kept = {n for n, r in new.rules.items() if n in self.rules
                and (r.spec, r.macros) == (self.rules[n].spec, self.rules[n].macros)}
        for k, inst in self.instances.items():
            if inst.rule.name in kept:
                inst.rule = new.rules[inst.rule.name]
                new.instances[k] = inst
                if inst.state == "firing":
                    new.firing[inst.rule.name].add(inst)
            elif inst.state in ("pending", "firing") and inst.alert_id is not None:
                self._transition(inst, "resolved", now)
        new.next_due = {n: t for n, t in self.next_due.items() if n in kept}
        new.records = self.records
        new.dirty = {i: inst for i, inst in self.dirty.items() if inst.rule.name in kept}
        new.evaluated = self.evaluated
        return new

    # -- verification ----------------------------------------------------------------------

    def verdict(self, alert_id: int, since: float, now: float) -> tuple[str, float | None]:
        """Has the condition of open alert ``alert_id`` cleared on data newer than ``since``
        (a fix's end)? The rule's own condition, not the alert, whose ``keep_firing_for`` hold
        would outlast any fix. Returns ``("cleared" | "holds" | "quiet" | "unknown", None)``
        or ``("wait", t)``: no verdict before ``t``. A windowed rule needs a whole window of
        fresh data; a state (threshold, query) a fresh evaluation; an occurrence (pulse) is
        "quiet" while none recurred, "holds" once one did."""
        inst = next((i for i in self.instances.values() if i.alert_id == alert_id), None)
        if inst is None:
            return "unknown", None
        r = inst.rule
        if r.pulse:
            return ("holds", None) if inst.last_true > since else ("quiet", None)
        if inst.window is None:
            if inst.last_eval <= since:
                return "wait", None
            return ("holds", None) if inst.active else ("cleared", None)
        need = r.window / 4 if r.agg_fn == "predict" else r.window
        if now < since + need:
            return "wait", since + need
        fresh = Window()
        for t, v, eid in inst.window:
            if t > since:
                fresh.add(t, v, eid)
        value = fresh.value(r.agg_fn, now, r.window, r.horizon)  # type: ignore[arg-type]
        if value is None:
            return "cleared" if r.agg_fn in ("count", "rate") else "wait", None
        held = r.when is None or r.when(inst.event, {**inst.extra, "value": value})
        return ("holds", None) if held else ("cleared", None)

    # -- output --------------------------------------------------------------------------

    def _fields(self, inst: Instance) -> dict:
        r = inst.rule
        f: dict = {}
        if inst.event is not None:
            f.update(msgspec.structs.asdict(inst.event))
        f.update(inst.extra)
        for i, (g, _) in enumerate(r.group_by):
            f[g] = inst.key[i]
        f.update(node=inst.node, rule=r.name, severity=r.severity, value=inst.value, count=inst.count,
                 first_seen=inst.first_seen, last_seen=inst.last_seen)
        return {k: v for k, v in f.items() if v is not MISSING}

    def _render(self, inst: Instance) -> dict:
        r, fields = inst.rule, self._fields(inst)

        def render(t):
            try:
                return t.render(fields)
            except (TemplateError, TypeError, ValueError) as e:
                log.warning("rule %s: template %r: %s", r.name, t.source, e)
                return str(t.source)

        labels = {"alertname": r.name, "severity": r.severity}
        if inst.node:
            labels["node"] = inst.node
        for i, (g, _) in enumerate(r.group_by):
            if inst.key[i] is not None:
                labels[g] = str(inst.key[i])
        labels.update({k: str(render(t)) for k, t in r.labels.items()})
        return {
            "labels": labels,
            "annotations": {k: str(render(t)) for k, t in r.annotations.items()},
            "propose": [{"playbook": pb, "params": {k: render(t) for k, t in params.items()}, "auto": auto,
                         **({"if_output": gate} if gate else {})}
                        for (pb, params, auto), gate in zip(r.propose, r.propose_if or [None] * len(r.propose),
                                                            strict=True)],
            "fields": {g: inst.key[i] for i, (g, _) in enumerate(r.group_by)},
        }

    def _record(self, inst: Instance, transition: str | None, t: float) -> dict:
        if transition is not None and not (transition == "resolved" and inst.rendered):
            inst.rendered = self._render(inst)
        elif transition is None and inst.rendered and inst.state != "inactive":
            # an update of an open alert: its summary says the current value ("12 failed
            # logins", not the 10 of the first firing); labels and candidates stay as fired
            inst.rendered = {**inst.rendered, "annotations": self._render(inst)["annotations"]}
        room = max(0, MAX_LINKED_EVENTS - inst.linked)
        events = inst.new_events[:room]
        inst.linked += len(events)
        inst.new_events = []
        return {
            "id": inst.alert_id, "rule": inst.rule.name, "key": list(inst.key), "node": inst.node,
            "state": transition or ("resolved" if inst.state == "inactive" else inst.state), "severity": inst.rule.severity,
            "value": inst.value if isinstance(inst.value, int | float) else None,
            "first_seen": inst.first_seen, "last_seen": inst.last_seen, "count": inst.count,
            "pending_at": inst.pending_at, "firing_at": inst.firing_at, "resolved_at": inst.resolved_at,
            **inst.rendered, "events": events, "transition": transition, "at": t,
            "notify": inst.rule.notify,
        }

    def drain(self) -> list[dict]:
        """Everything that changed since the last drain: transitions first, in order, then a
        final state for every other touched alert (counts, last seen, new evidence)."""
        out = self.records
        recorded = {rec["id"] for rec in out}
        for inst in self.dirty.values():
            if inst.alert_id is not None and (inst.new_events or inst.alert_id not in recorded):
                out.append(self._record(inst, None, inst.last_seen))
        self.records, self.dirty = [], {}
        return out

    def restore(self, rows: Iterable[dict]) -> None:
        """Re-adopt open alerts after a hub restart (their windows start empty)."""
        for row in rows:
            r = self.rules.get(row["rule"])
            if r is None:
                continue
            key = tuple(row["key"])
            inst = self.instances[(r.name, key)] = Instance(r, key)
            inst.state, inst.alert_id, inst.node = row["state"], row["id"], row["node"]
            # a window or a pulse cannot be rebuilt: let it resolve unless new events renew it;
            # states (thresholds, queries) stay active until the next sample or query says otherwise
            inst.active = not (r.agg_fn or r.pulse)
            inst.first_seen = inst.since = row["first_seen"]
            inst.last_seen = inst.last_true = row["last_seen"]
            inst.count, inst.value = row["count"], row["value"]
            inst.pending_at, inst.firing_at = row["pending_at"], row["firing_at"]
            inst.fired_at = row["firing_at"]
            inst.linked = MAX_LINKED_EVENTS // 2
            inst.rendered = {k: row[k] for k in ("labels", "annotations", "propose", "fields") if k in row}
            if inst.state == "firing":
                self.firing[r.name].add(inst)
            self.next_id = max(self.next_id, row["id"] + 1)
