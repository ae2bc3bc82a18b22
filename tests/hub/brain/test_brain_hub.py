"""In a running hub, decide() (called from an executor thread, as the proposal worker does)
logs its decision through the hub's one writer."""

from __future__ import annotations

import asyncio
import json

from fakes import FakeModel, playbooks

from hub.brain import decide, runtime


async def test_decision_logged_through_the_writer(hub):
    assert runtime._state["writer"] is hub.writer  # the brain feature configured it
    alert = {"id": 41, "rule": "unit-failed", "node": "n1", "summary": "nginx.service failed"}
    cands = [{"playbook": "restart-unit", "params": {"unit": "nginx.service"}}]
    m = FakeModel({"playbook": "restart-unit", "params": {}, "evidence": ["A41"], "rationale": "it failed"})
    loop = asyncio.get_running_loop()
    out = await loop.run_in_executor(None, lambda: decide(alert, cands, playbooks(), model=m))
    assert out["playbook"] == "restart-unit" and out["decision_id"]
    [(outcome, parsed, sha)] = hub.query(
        "SELECT outcome, parsed, model_sha256 FROM brain_decisions WHERE id = ?", (out["decision_id"],))
    assert outcome == "accepted" and json.loads(parsed)["rationale"] == "it failed" and sha == "f" * 64
