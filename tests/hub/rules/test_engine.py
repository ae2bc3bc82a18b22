"""The live engine on a real hub: events over HTTP -> alerts in SQLite -> listeners."""

from __future__ import annotations

import asyncio
import json
import time

from rules_fixtures import rules_hub  # noqa: F401 - fixture

from agent import wire
from hub.keys import ALERT_LISTENERS
from tests.conftest import async_wait_for

RULES = """\
rules:
  - name: hot
    metric: {name: temp_celsius, labels: {sensor: cpu}}
    when: {value: {gte: 90}}
    group_by: [node, sensor]
    for: 1s
    annotations: {summary: "{{ sensor }} on {{ node }} at {{ value }}C"}
    propose:
      - playbook: restart-unit
        params: {unit: "fan-{{ sensor }}.service"}
  - name: offline
    absent: {for: 2s}
"""


def metric(v: float, sensor: str = "cpu") -> wire.Metrics:
    return wire.Metrics(ts=time.time(), samples={f'temp_celsius{{sensor="{sensor}"}}': v, "load1": 0.1})


def alerts(h):
    return h.query("SELECT id, rule, node, state, count, pending_at, firing_at, resolved_at, propose,"
                   " summary FROM alerts ORDER BY id")


async def test_lifecycle_pending_firing_resolved_with_evidence_and_listeners(rules_hub, tmp_path):  # noqa: F811
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "t.yaml").write_text(RULES)
    h = await rules_hub(rules_dir=tmp_path / "r")
    seen = []
    h.app[ALERT_LISTENERS].append(lambda db, a: seen.append((a["transition"], a["rule"].name, a["propose"])))
    await h.send("n1", [metric(70), metric(95, "gpu")])  # below, and not the cpu sensor
    await h.send("n1", [metric(95)])
    rows = await async_wait_for(lambda: [r for r in alerts(h) if r[1] == "hot"], 30, what="pending alert")
    assert rows[0][3] in ("pending", "firing") and rows[0][2] == "n1"
    await h.send("n1", [metric(96)])
    await async_wait_for(lambda: [r for r in alerts(h) if r[1] == "hot" and r[3] == "firing"], 30, what="firing")
    await h.send("n1", [metric(50)])
    (row,) = await async_wait_for(lambda: [r for r in alerts(h) if r[1] == "hot" and r[3] == "resolved"], 30,
                                  what="resolved")
    _id, _rule, node, state, count, pending_at, firing_at, resolved_at, propose, summary = row
    assert count == 2 and pending_at <= firing_at <= resolved_at
    assert json.loads(propose) == [{"playbook": "restart-unit", "params": {"unit": "fan-cpu.service"}, "auto": False}]
    assert summary == "cpu on n1 at 96.0C"
    # the evidence: exactly the two hot events, by id
    linked = h.query("SELECT e.data FROM alert_events a JOIN events e ON e.id = a.event_id WHERE a.alert_id = ?", (row[0],))
    assert sorted(json.loads(d)["samples"]['temp_celsius{sensor="cpu"}'] for (d,) in linked) == [95.0, 96.0]
    hot = [s for s in seen if s[1] == "hot"]
    assert [s[0] for s in hot] == ["pending", "firing", "resolved"]
    assert hot[1][2][0]["params"] == {"unit": "fan-cpu.service"}


async def test_absent_node_goes_offline_and_comes_back(rules_hub, tmp_path):  # noqa: F811
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "t.yaml").write_text(RULES)
    h = await rules_hub(rules_dir=tmp_path / "r")
    await h.send("quiet", [])  # a heartbeat
    await h.send("chatty", [])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not [r for r in alerts(h) if r[1] == "offline" and r[3] == "firing"]:
        await h.send("chatty", [])
        await asyncio.sleep(0.2)
    firing = [r for r in alerts(h) if r[1] == "offline" and r[3] == "firing"]
    assert [r[2] for r in firing] == ["quiet"]
    await h.send("quiet", [])
    await async_wait_for(lambda: [r for r in alerts(h) if r[1] == "offline" and r[3] == "resolved"], 30,
                         what="offline alert resolved")


async def test_open_alerts_survive_a_restart(rules_hub, tmp_path):  # noqa: F811
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "t.yaml").write_text(RULES.replace("for: 1s", "for: 0s"))
    h = await rules_hub(rules_dir=tmp_path / "r")
    await h.send("n1", [metric(99)])
    await async_wait_for(lambda: [r for r in alerts(h) if r[1] == "hot" and r[3] == "firing"], 30, what="firing")
    await h.runner.cleanup()
    h2 = await rules_hub(rules_dir=tmp_path / "r", data_dir=h.data_dir)
    h2.creds, h2.seq = h.creds, h.seq
    await h2.send("n1", [metric(10)])
    await async_wait_for(lambda: [r for r in alerts(h2) if r[1] == "hot" and r[3] == "resolved"], 30,
                         what="the pre-restart alert resolved")
    assert len([r for r in alerts(h2) if r[1] == "hot"]) == 1  # the same alert, not a second one


async def test_ingest_never_waits_for_rules_and_a_bad_file_does_not_stop_good_ones(rules_hub, tmp_path):  # noqa: F811
    import threading

    from hub.rules.web import SERVICE

    d = tmp_path / "r"
    d.mkdir()
    (d / "good.yaml").write_text(RULES)
    (d / "bad.yaml").write_text("rules:\n  - name: broken\n    event: {kind: log, where: {message: {regex: '('}}}\n")
    h = await rules_hub(rules_dir=d)
    service = h.app[SERVICE]
    assert "hot" in service.rules and "broken" not in service.rules
    gate, entered = threading.Event(), threading.Event()
    feed = service.engine.feed

    def blocked_feed(*a, **kw):
        entered.set()
        assert gate.wait(30), "test never released the rules thread"
        return feed(*a, **kw)

    service.engine.feed = blocked_feed
    try:
        await h.send("n1", [metric(99)])
        await async_wait_for(entered.is_set, 30, what="rules thread to take the first event")
        # the rules thread is stuck; ingest still commits and acks
        for _ in range(5):
            reply = await h.send("n1", [metric(99)])
            assert reply["stored"] == 1
        assert h.query("SELECT count(*) FROM events WHERE node = 'n1'")[0][0] == 6
        assert not [r for r in alerts(h) if r[1] == "hot"]
    finally:
        gate.set()
    await async_wait_for(lambda: [r for r in alerts(h) if r[1] == "hot" and r[3] == "firing"], 30,
                         what="alert once the rules thread catches up")


async def test_throttle_folds_a_second_burst_into_the_first_alert(rules_hub, tmp_path):  # noqa: F811
    d = tmp_path / "r"
    d.mkdir()
    (d / "t.yaml").write_text(
        "rules:\n  - name: burst\n    event: {kind: log, where: {message: boom}}\n"
        "    group_by: [node]\n    throttle: 1h\n")
    h = await rules_hub(rules_dir=d)
    boom = wire.Log(ts=time.time(), source="s", message="boom")
    await h.send("n1", [boom])
    # a pulse with keep_firing_for 0 resolves on the next tick
    await async_wait_for(lambda: h.query("SELECT state FROM alerts WHERE rule = 'burst'") == [("resolved",)], 30,
                         what="first alert resolved")
    await h.send("n1", [boom, boom])
    await async_wait_for(lambda: h.query("SELECT count FROM alerts WHERE rule = 'burst'") == [(3,)], 30,
                         what="the burst counted on the first alert")
    assert len(h.query("SELECT id FROM alerts WHERE rule = 'burst'")) == 1
    assert h.query("SELECT count(*) FROM alert_events a JOIN alerts b ON b.id = a.alert_id WHERE b.rule = 'burst'") == [(3,)]
