"""`homelab-hub rules reload` and SIGHUP on a live hub (issue 19, item 7): all files valid or
none, the running set untouched on error, alerts of unchanged rules kept."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from rules_fixtures import rules_hub  # noqa: F401 - fixture

from agent import wire
from hub.rules.engine import Engine
from hub.rules.loader import load_text
from hub.rules.web import SERVICE
from tests.conftest import async_wait_for

HOT = """\
rules:
  - name: hot
    metric: temp_celsius
    when: {value: {gte: 90}}
    annotations: {summary: "{{ node }} at {{ value }}"}
"""
COLD = """\
rules:
  - name: cold
    metric: temp_celsius
    when: {value: {lte: %s}}
"""


def temp(v: float) -> wire.Metrics:
    return wire.Metrics(ts=time.time(), samples={"temp_celsius": v})


def test_reloaded_engine_keeps_unchanged_rules_and_resolves_changed_ones():
    t0 = 1_767_225_600.0
    eng = Engine(load_text(HOT + COLD.replace("rules:\n", "") % 10, "a.yaml"))
    eng.feed("n1", 1, wire.Metrics(ts=t0, samples={"temp_celsius": 95.0}), t0)
    eng.feed("n2", 2, wire.Metrics(ts=t0, samples={"temp_celsius": 5.0}), t0)
    first = {r["rule"]: r["id"] for r in eng.drain() if r["transition"] == "firing"}
    new = eng.reloaded(load_text(HOT + COLD.replace("rules:\n", "") % 0, "a.yaml"), t0 + 1)
    recs = new.drain()
    assert [(r["rule"], r["id"], r["transition"]) for r in recs] == [("cold", first["cold"], "resolved")]
    hot = [i for i in new.instances.values() if i.rule.name == "hot"]
    assert [(i.state, i.alert_id) for i in hot] == [("firing", first["hot"])]
    assert hot[0].rule is new.rules["hot"]
    new.feed("n1", 3, wire.Metrics(ts=t0 + 2, samples={"temp_celsius": 50.0}), t0 + 2)
    assert [(r["rule"], r["id"], r["transition"]) for r in new.drain()] == [("hot", first["hot"], "resolved")]


def cli(h, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    env["HOMELAB_HUB_RULES_DIR"] = str(h.rules_dir)
    return subprocess.run([sys.executable, "-m", "hub", "rules", *args, "--data-dir", str(h.data_dir)],
                          capture_output=True, text=True, timeout=120, env=env)


async def test_reload_all_or_nothing_and_open_alerts_of_unchanged_rules_kept(rules_hub, tmp_path):  # noqa: F811
    d = tmp_path / "r"
    d.mkdir()
    (d / "hot.yaml").write_text(HOT)
    h = await rules_hub(rules_dir=d)
    h.rules_dir = d
    await h.send("n1", [temp(95)])
    (alert_id,) = (await async_wait_for(lambda: h.query("SELECT id FROM alerts WHERE rule = 'hot' AND state = 'firing'"),
                                        30, what="hot firing"))[0]
    loop = asyncio.get_running_loop()
    before = h.app[SERVICE].engine

    # a new good file and a broken one: refused whole, the running set untouched
    (d / "cold.yaml").write_text(COLD % 10)
    (d / "bad.yaml").write_text("rules:\n  - name: b\n    metric: x\n    propose: [{playbook: no-such}]\n")
    r = await loop.run_in_executor(None, cli, h, "reload", "--wait", "20")
    assert r.returncode == 1
    assert f"{d / 'bad.yaml'}:4: rules[0].propose[0].playbook: no such playbook 'no-such'" in r.stderr
    assert "nothing reloaded" in r.stderr
    assert h.app[SERVICE].engine is before and "cold" not in before.rules

    # fixed: reloaded, the hot alert stays the same open alert
    (d / "bad.yaml").unlink()
    r = await loop.run_in_executor(None, cli, h, "reload", "--wait", "30")
    assert r.returncode == 0, r.stderr
    assert "1 added, 0 changed, 0 removed" in r.stdout and "added: cold" in r.stdout
    assert "cold" in h.app[SERVICE].engine.rules
    assert h.query("SELECT id, state FROM alerts WHERE rule = 'hot'") == [(alert_id, "firing")]
    await h.send("n1", [temp(5)])
    await async_wait_for(lambda: h.query("SELECT state FROM alerts WHERE rule = 'cold'") == [("firing",)], 30,
                         what="the new rule evaluated")
    assert h.query("SELECT id, state FROM alerts WHERE rule = 'hot'") == [(alert_id, "resolved")]  # cooled

    # SIGHUP: cold changed (its alert resolved, the rule re-evaluated under its new threshold)
    (d / "cold.yaml").write_text(COLD % 0)
    os.kill(os.getpid(), signal.SIGHUP)
    await async_wait_for(lambda: h.query("SELECT state FROM alerts WHERE rule = 'cold'") == [("resolved",)], 30,
                         what="the changed rule's alert resolved by the reload")
    assert h.app[SERVICE].engine.rules["cold"].spec["when"] == {"value": {"lte": 0}}
    await h.send("n1", [temp(5)])  # 5 is not <= 0: the new definition holds, no new alert
    await asyncio.sleep(1.5)
    assert h.query("SELECT count(*) FROM alerts WHERE rule = 'cold'") == [(1,)]


def test_reload_with_no_hub_running_says_so(tmp_path):
    from hub.store import open_db

    d = tmp_path / "r"
    d.mkdir()
    (d / "hot.yaml").write_text(HOT)
    (tmp_path / "hub").mkdir()
    open_db(tmp_path / "hub" / "homelab.db").close()  # a hub's database, and no hub

    class H:
        rules_dir, data_dir = d, tmp_path / "hub"

    r = cli(H, "reload", "--wait", "2")
    assert r.returncode == 1 and "no running hub answered within 2s" in r.stderr
