"""In a running hub, decide() (called from an executor thread, as the proposal worker does)
logs its decision through the hub's one writer."""

from __future__ import annotations

import asyncio
import json

from brain_fakes import FakeModel, playbooks

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


async def test_scheduled_digest_queues_proposals_never_runs(tmp_path, monkeypatch):
    import shutil
    import sqlite3
    import sys
    import time
    from pathlib import Path

    from aiohttp import web

    from hub.app import create_app
    from hub.config import load_settings

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from bench._brainfleet import build_fleet

    for k in [k for k in __import__("os").environ if k.startswith("HOMELAB_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("HOMELAB_MODEL", "none")
    data = tmp_path / "hub"
    data.mkdir()
    await asyncio.to_thread(build_fleet, tmp_path / "fleet.db")
    shutil.copy(tmp_path / "fleet.db", data / "homelab.db")
    app = create_app(load_settings(data_dir=data, listen="127.0.0.1:0", brain_digest_every="1s"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    def query(_d, sql):
        c = sqlite3.connect(f"file:{data / 'homelab.db'}?mode=ro", uri=True, timeout=10)
        try:
            return c.execute(sql).fetchall()
        finally:
            c.close()

    try:
        deadline = time.monotonic() + 20
        while query(data, "SELECT count(*) FROM proposal_requests WHERE rule = 'digest'")[0][0] < 4:
            assert time.monotonic() < deadline, "timed out waiting for the digest's proposal requests"
            await asyncio.sleep(0.1)
        nodes = {r[0] for r in query(data, "SELECT node FROM proposal_requests WHERE rule = 'digest'")}
        assert {"pi", "nas"} <= nodes
        assert query(data, "SELECT count(*) FROM jobs WHERE mode = 'run'")[0][0] == 0
        assert query(data, "SELECT outcome FROM brain_decisions WHERE purpose = 'digest' ORDER BY id DESC LIMIT 1")[0][0].startswith("queued")
    finally:
        await runner.cleanup()


async def test_proposal_worker_asks_the_brain_and_explain_tells_it(tmp_path, monkeypatch):
    """A fix request for alert 1 (nginx failed on web1) -> the proposal worker calls decide()
    -> a proposal that names the decision -> explain shows both."""
    import shutil
    import sqlite3
    import sys
    import time
    from pathlib import Path

    from aiohttp import web

    from hub.app import create_app
    from hub.brain.explain import explain, render
    from hub.config import load_settings
    from hub.keys import WRITER

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from bench._brainfleet import build_fleet

    for k in [k for k in __import__("os").environ if k.startswith("HOMELAB_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("HOMELAB_MODEL", "none")
    data = tmp_path / "hub"
    data.mkdir()
    await asyncio.to_thread(build_fleet, tmp_path / "fleet.db")
    shutil.copy(tmp_path / "fleet.db", data / "homelab.db")
    app = create_app(load_settings(data_dir=data, listen="127.0.0.1:0"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()

    def query(sql):
        c = sqlite3.connect(f"file:{data / 'homelab.db'}?mode=ro", uri=True, timeout=10)
        try:
            return c.execute(sql).fetchall()
        finally:
            c.close()

    try:
        alert = {"id": 1, "rule": "unit_failed", "node": "web1", "summary": "nginx.service failed"}
        cands = [{"playbook": "restart-unit", "params": {"unit": "nginx.service"}}]
        await app[WRITER].run(lambda db: db.execute(
            "INSERT INTO proposal_requests (ts, alert_id, rule, node, alert, candidates) VALUES (?, 1, 'unit_failed',"
            " 'web1', ?, ?)", (time.time(), json.dumps(alert), json.dumps(cands))))
        deadline = time.monotonic() + 20
        while not query("SELECT 1 FROM proposals WHERE alert_id = 1 AND decision_id IS NOT NULL"):
            assert time.monotonic() < deadline, f"no proposal with a decision: {query('SELECT * FROM proposal_requests')}"
            await asyncio.sleep(0.1)
        [(playbook, decision_id)] = query("SELECT playbook, decision_id FROM proposals WHERE alert_id = 1")
        assert playbook == "restart-unit"
        assert query(f"SELECT outcome FROM brain_decisions WHERE id = {decision_id}") == [("no_model",)]
        text = render(explain(1, data / "homelab.db"))
        assert "restart-unit" in text and f"decision {decision_id}" in text and "no model" in text
    finally:
        await runner.cleanup()
