"""``homelab-hub rules test``: rule unit tests in YAML, like ``promtool test rules``.

A test file names the rule files it tests and lists cases. Each case feeds input events
(at offsets from a start time, optionally repeated) through the same ``Engine`` the hub
runs, with a simulated clock that ticks every ``interval``, and checks which alerts are
firing at the expected times. Periodic rules (absence, twin queries) run their SQL on an
in-memory copy of the hub schema that the case's events are projected into, using the
hub's own projections. See docs/rules.md for the format.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from agent import wire
from agent.settings import parse_duration
from hub.rules.engine import Engine
from hub.rules.loader import Doc, RuleError, load_paths
from hub.rules.service import periodic_rows
from hub.schema import migrate

log = logging.getLogger(__name__)
DEFAULT_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
TEST_KEYS = {"rule_files", "tests"}
CASE_KEYS = {"name", "start", "interval", "input", "expect"}
INPUT_KEYS = {"at", "node", "event", "repeat", "every", "heartbeat", "clock_skew", "metric", "values"}
_SERIES = re.compile(r"^(-?\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)x(\d+)$")
EXPECT_KEYS = {"at", "rule", "firing", "pending"}
ALERT_KEYS = {"rule", "labels", "annotations", "propose", "severity"}


@dataclass
class Result:
    file: str
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _check_keys(doc: Doc, path: tuple, value: Any, allowed: set[str]) -> None:
    if not isinstance(value, dict):
        raise doc.error(path, f"expected a mapping, got {type(value).__name__}")
    for k in value:
        if k not in allowed:
            raise doc.error((*path, k), f"unknown key {k!r} (allowed: {', '.join(sorted(allowed))})")


def _dur(doc: Doc, path: tuple, v: Any) -> float:
    try:
        return parse_duration(v)
    except ValueError as e:
        raise doc.error(path, str(e)) from None


class _Twin:
    """An in-memory hub schema the case's events are stored and projected into."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        migrate(self.db)
        self.seq: dict[str, int] = {}
        self.next_id = 1
        from hub.project import Projector

        try:
            self.projector: Any = Projector(self.db)
        except Exception as e:  # noqa: BLE001 - projections are a bonus in tests, not a must
            log.warning("rules test: projections unavailable: %s", e)
            self.projector = None

    def node(self, name: str, t: float, clock_skew: float | None) -> None:
        self.db.execute(
            "INSERT INTO nodes (name, created, last_seen, clock_skew) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen,"
            " clock_skew = coalesce(excluded.clock_skew, clock_skew)", (name, t, t, clock_skew))

    def store(self, node: str, ev: Any) -> int:
        seq = self.seq[node] = self.seq.get(node, 0) + 1
        eid, self.next_id = self.next_id, self.next_id + 1
        self.db.execute("BEGIN")
        self.db.execute("INSERT INTO events (id, node, seq, ts, kind, data) VALUES (?, ?, ?, ?, ?, ?)",
                        (eid, node, seq, ev.ts, ev.__struct_config__.tag, msgspec.json.encode(ev).decode()))
        if self.projector is not None:
            try:
                self.projector.begin()
                self.projector.add(node, seq, ev.ts, ev)
                self.projector.flush()
            except Exception as e:  # noqa: BLE001
                log.warning("rules test: projection failed: %s", e)
                self.projector.rollback()
        self.db.execute("COMMIT")
        return eid


def _inputs(doc: Doc, path: tuple, items: Any, start: float) -> list[tuple[float, dict, tuple]]:
    if not isinstance(items, list):
        raise doc.error(path, "input must be a list")
    out = []
    for i, item in enumerate(items):
        ip = (*path, i)
        _check_keys(doc, ip, item, INPUT_KEYS)
        at = _dur(doc, (*ip, "at"), item.get("at", 0))
        repeat = item.get("repeat", 1)
        if not isinstance(repeat, int) or not 1 <= repeat <= 100_000:
            raise doc.error((*ip, "repeat"), "repeat must be an integer from 1 to 100000")
        every = _dur(doc, (*ip, "every"), item.get("every", "1s"))
        if "metric" in item:
            if "event" in item or "values" not in item:
                raise doc.error((*ip, "metric"), "metric needs values (and no event)")
            for n, v in enumerate(_values(doc, (*ip, "values"), item["values"])):
                ev = {"kind": "metrics", "samples": {str(item["metric"]): v}}
                out.append((start + at + n * every, {**item, "event": ev}, ip))
            continue
        if "event" not in item and not item.get("heartbeat") and "clock_skew" not in item:
            raise doc.error(ip, "an input needs event, metric, heartbeat or clock_skew")
        for n in range(repeat):
            out.append((start + at + n * every, item, ip))
    out.sort(key=lambda x: x[0])
    return out


def _values(doc: Doc, path: tuple, spec: Any) -> list[float]:
    """promtool's series notation: '0.5+0.01x24' is 0.5, 0.51, ... (25 values); or a list."""
    if isinstance(spec, list):
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in spec):
            raise doc.error(path, "values must be numbers")
        return [float(v) for v in spec]
    out: list[float] = []
    for tok in str(spec).split():
        m = _SERIES.match(tok)
        try:
            if m:
                a, b, n = float(m.group(1)), float(m.group(2)), int(m.group(3))
                if n > 100_000:
                    raise ValueError("too many values")
                out += [a + b * i for i in range(n + 1)]
            else:
                out.append(float(tok))
        except ValueError:
            raise doc.error(path, f"bad value {tok!r} (expected a number or a+bxN)") from None
    return out


def _event(doc: Doc, path: tuple, spec: Any, t: float) -> Any:
    if not isinstance(spec, dict):
        raise doc.error(path, "event must be a mapping with a kind")
    try:
        return msgspec.convert({**spec, "ts": t}, wire.AnyEvent)
    except msgspec.ValidationError as e:
        raise doc.error(path, f"not a valid event: {e}") from None


def _matches(want: dict, got: dict) -> bool:
    for k in ("labels", "annotations"):
        for name, v in (want.get(k) or {}).items():
            if str(got[k].get(name)) != str(v):
                return False
    if "severity" in want and got["labels"].get("severity") != want["severity"]:
        return False
    if "propose" in want:
        if json.dumps(want["propose"], sort_keys=True, default=str) != json.dumps(
                [{"playbook": p["playbook"], "params": p["params"]} for p in got["propose"]],
                sort_keys=True, default=str):
            return False
    return True


def _compare(state: str, want: list, got: list[dict], at: str) -> list[str]:
    fails, left = [], list(got)
    for w in want:
        hit = next((g for g in left if (w.get("rule") in (None, g["rule"])) and _matches(w, g)), None)
        if hit is None:
            fails.append(f"at {at}: expected {state} alert {json.dumps(w, default=str)}; "
                         f"{state}: {_show(got)}")
        else:
            left.remove(hit)
    for g in left:
        fails.append(f"at {at}: unexpected {state} alert {_show([g])}")
    return fails


def _show(alerts: list[dict]) -> str:
    return json.dumps([{"rule": a["rule"], "labels": a["labels"], "annotations": a["annotations"]}
                       for a in alerts], default=str) if alerts else "none"


def run_case(doc: Doc, path: tuple, case: dict, rules: list) -> Result:
    _check_keys(doc, path, case, CASE_KEYS)
    res = Result(doc.file, str(case.get("name", f"tests[{path[-1]}]")))
    start = float(case.get("start", DEFAULT_START))
    interval = _dur(doc, (*path, "interval"), case.get("interval", "10s"))
    if interval <= 0:
        raise doc.error((*path, "interval"), "interval must be positive")
    inputs = _inputs(doc, (*path, "input"), case.get("input", []), start)
    expects = []
    for j, e in enumerate(case.get("expect", [])):
        ep = (*path, "expect", j)
        _check_keys(doc, ep, e, EXPECT_KEYS)
        for st in ("firing", "pending"):
            for k, a in enumerate(e.get(st) or []):
                _check_keys(doc, (*ep, st, k), a, ALERT_KEYS)
        expects.append((start + _dur(doc, (*ep, "at"), e.get("at", 0)), e))
    expects.sort(key=lambda x: x[0])
    engine, twin = Engine(rules), _Twin()
    end = max([t for t, _, _ in inputs] + [t for t, _ in expects] + [start])
    if (end - start) / interval > 1_000_000:
        raise doc.error((*path, "interval"), "too many evaluation steps; raise the interval")
    i = k = 0
    t = start
    while True:
        while i < len(inputs) and inputs[i][0] <= t:
            ts, item, ip = inputs[i]
            node = str(item.get("node", "node1"))
            twin.node(node, ts, item.get("clock_skew"))
            if "event" in item:
                ev = _event(doc, (*ip, "event"), item["event"], ts)
                engine.feed(node, twin.store(node, ev), ev, ts)
            i += 1
        engine.tick(t, lambda r, now: periodic_rows(twin.db, r, now))
        while k < len(expects) and expects[k][0] <= t:
            at_t, e = expects[k]
            at = f"{e.get('at', 0)}"
            names = {e["rule"]} if e.get("rule") else {r.name for r in rules}
            for st in ("firing", "pending"):
                if st == "pending" and "pending" not in e:
                    continue
                got = [engine._render(inst) | {"rule": inst.rule.name}
                       for inst in engine.instances.values()
                       if inst.state == st and inst.rule.name in names]
                res.failures += _compare(st, e.get(st) or [], got, at)
            k += 1
        engine.drain()
        if t >= end:
            break
        nxt = t + interval
        if i < len(inputs):
            nxt = min(nxt, inputs[i][0])
        if k < len(expects):
            nxt = min(nxt, expects[k][0])
        t = max(nxt, t + 1e-6)
    return res


def run_file(path: Path) -> list[Result]:
    doc = Doc(str(path), Path(path).read_text())
    data = doc.data
    _check_keys(doc, (), data, TEST_KEYS)
    files = data.get("rule_files")
    if files is None:
        guess = Path(path).parent.parent / f"{Path(path).stem}.yaml"
        if not guess.exists():
            raise doc.error((), "rule_files is required (no rule file of the same name next to tests/)")
        files = [str(guess)]
    if not isinstance(files, list) or not files:
        raise doc.error(("rule_files",), "rule_files must be a non-empty list")
    rule_paths = [(Path(path).parent / f) for f in files]
    rules, errors = load_paths(rule_paths)
    if errors:
        raise errors[0]
    if not isinstance(data.get("tests"), list):
        raise doc.error(("tests",), "tests must be a list of cases")
    return [run_case(doc, ("tests", n), case, rules) for n, case in enumerate(data["tests"])]


def test_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    d = path / "tests" if (path / "tests").is_dir() else path
    return sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml"))


def run_paths(paths: list[Path]) -> tuple[list[Result], list[RuleError]]:
    results, errors = [], []
    for p in paths:
        if not Path(p).exists():
            errors.append(RuleError(str(p), None, "", "no such file or directory"))
            continue
        for f in test_files(p):
            try:
                results += run_file(f)
            except RuleError as e:
                errors.append(e)
            except (OSError, UnicodeDecodeError) as e:
                errors.append(RuleError(str(f), None, "", f"cannot read: {e}"))
    return results, errors
