"""A rule's verdict must not depend on which other rules are loaded, or in what order.

The engine hands one sample to every rule on its metric; an aggregate rule once wrote its
aggregate into the shared dict, so a threshold rule evaluated after it saw the aggregate
instead of the sample (issue 19, item 1). The property test evaluates random rule sets in
random orders against the same events and compares every rule's alerts with the alerts of
that rule evaluated alone.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import wire
from hub.rules.engine import Engine
from hub.rules.loader import load_file, load_text

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_767_225_600.0


def run(rules, events, step=30.0):
    """Feed (t, node, event) in order with a tick every ``step`` s; every record, by rule."""
    eng = Engine(rules)
    out: dict[str, list] = {r.name: [] for r in rules}
    t_end = events[-1][0] + 3600 if events else T0
    t, i = T0, 0
    while t <= t_end:
        while i < len(events) and events[i][0] <= t:
            ts, node, ev = events[i]
            eng.feed(node, i + 1, ev, ts)
            i += 1
        eng.tick(t)
        for rec in eng.drain():
            out[rec["rule"]].append(_comparable(rec))
        t += step
    return out


def _comparable(rec: dict) -> tuple:
    # alert ids are numbered per engine: everything else must be identical
    return (tuple(rec["key"]), rec["node"], rec["state"], rec["transition"], rec["value"], rec["at"],
            rec["count"], tuple(rec["events"]), tuple(sorted(rec["annotations"].items())),
            tuple(sorted(rec["labels"].items())), repr(rec["propose"]))


def test_a_user_rule_fires_whatever_the_shipped_rules_and_their_order():
    shipped = load_file(ROOT / "rules" / "disk.yaml")
    (mine,) = load_text("""
rules:
  - name: my-disk
    metric: disk_used_ratio
    when: {value: {gte: 0.5}}
    group_by: [node, mount]
    annotations: {summary: "{{ mount }} at {{ value }}"}
""", "mine.yaml")
    # a rising disk: the predict rule has a value (far below 1.0) for every sample
    events = [(T0 + 60 * k, "nas", wire.Metrics(ts=T0 + 60 * k,
                                                samples={'disk_used_ratio{mount="/"}': 0.55 + k / 1000}))
              for k in range(120)]
    alone = run([mine], events)["my-disk"]
    assert any(r[3] == "firing" for r in alone)
    for rules in (shipped + [mine], [mine] + shipped, shipped[::-1] + [mine]):
        assert run(rules, events)["my-disk"] == alone


# --- the property ---------------------------------------------------------------------

METRICS = ("m_a", "m_b")
AGGS = ("count", "rate", "sum", "avg", "min", "max", "predict")


@st.composite
def metric_rule(draw, name: str) -> dict:
    spec: dict = {"name": name, "metric": draw(st.sampled_from(METRICS)),
                  "group_by": draw(st.sampled_from([["node"], ["node", "dev"]]))}
    if draw(st.booleans()):
        fn = draw(st.sampled_from(AGGS))
        spec["aggregate"] = {"fn": fn, "window": draw(st.sampled_from(["2m", "5m", "10m"]))}
        if fn == "predict":
            spec["aggregate"]["horizon"] = "1h"
    op = draw(st.sampled_from(["gte", "lt"]))
    spec["when"] = {"value": {op: draw(st.sampled_from([0.2, 0.5, 0.8, 3, 10]))}}
    if draw(st.booleans()):
        spec["for"] = draw(st.sampled_from(["30s", "2m"]))
    if draw(st.booleans()):
        spec["keep_firing_for"] = draw(st.sampled_from(["1m", "5m"]))
    if draw(st.booleans()):
        spec["throttle"] = "10m"
    spec["annotations"] = {"summary": "{{ node }} {{ value }} {{ count }}"}
    return spec


@st.composite
def log_rule(draw, name: str) -> dict:
    where: dict = {"program": draw(st.sampled_from(["sshd", "cron", "kernel"]))}
    if draw(st.booleans()):
        where["message"] = {"contains": draw(st.sampled_from(["fail", "ok", "a"]))}
    spec: dict = {"name": name, "event": {"kind": "log", "where": where}}
    if draw(st.booleans()):
        spec["event"]["extract"] = {"message": r"(?P<word>[a-z]+)"}
        spec["group_by"] = ["node", "word"]
    if draw(st.booleans()):
        spec["aggregate"] = {"fn": "count", "window": "5m"}
        spec["when"] = {"value": {"gte": draw(st.sampled_from([1, 2, 4]))}}
    spec["keep_firing_for"] = draw(st.sampled_from(["0s", "2m"]))
    spec["annotations"] = {"summary": "{{ node }} {{ count }}"}
    return spec


@st.composite
def rule_set(draw) -> list[dict]:
    n = draw(st.integers(2, 6))
    return [draw(st.one_of(metric_rule(f"r{i}"), log_rule(f"r{i}"))) for i in range(n)]


@st.composite
def event_stream(draw) -> list[tuple]:
    out = []
    t = T0
    for _ in range(draw(st.integers(1, 40))):
        t += draw(st.sampled_from([5.0, 20.0, 60.0, 180.0]))
        node = draw(st.sampled_from(["n1", "n2"]))
        if draw(st.booleans()):
            samples = {}
            for m in draw(st.lists(st.sampled_from(METRICS), min_size=1, max_size=2, unique=True)):
                dev = draw(st.sampled_from(["sda", "sdb"]))
                samples[f'{m}{{dev="{dev}"}}'] = draw(st.sampled_from([0.0, 0.3, 0.6, 0.9, 5.0, 12.0]))
            out.append((t, node, wire.Metrics(ts=t, samples=samples)))
        else:
            prog = draw(st.sampled_from(["sshd", "cron", "kernel"]))
            msg = draw(st.sampled_from(["fail here", "ok there", "a b", "zzz"]))
            out.append((t, node, wire.Log(ts=t, source="journal", program=prog, message=msg)))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=rule_set(), events=event_stream(), data=st.data())
def test_each_rule_alone_equals_that_rule_among_others_in_any_order(specs, events, data):
    rules = load_text(yaml.safe_dump({"rules": specs}), "random.yaml")
    order = data.draw(st.permutations(rules))
    together = run(list(order), events)
    for r in rules:
        assert together[r.name] == run([r], events)[r.name], r.name
