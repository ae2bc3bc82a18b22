"""The rules service on a real writer and SQLite file: the rules thread queues the alerts'
store to the writer and goes on without waiting for it; the store is reported (stats,
``on_records``) after its COMMIT, from the writer thread."""

from __future__ import annotations

import asyncio
import linecache
import sys
import threading
import time

import msgspec

from agent import wire
from hub.rules.loader import load_paths
from hub.rules.service import RulesService
from hub.store import Writer
from tests.conftest import async_wait_for

_json = msgspec.json.Encoder().encode

RULES = """\
rules:
  - name: many-failures
    event:
      kind: log
      where: {message: {contains: "failed"}}
    aggregate: {fn: count, window: 1h}
    when: {value: {gte: 1}}
    group_by: [node]
"""


async def test_the_rules_thread_does_not_wait_for_the_alerts_store(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "r.yaml").write_text(RULES)
    rules, errors = load_paths([tmp_path / "r"])
    assert not errors and [r.name for r in rules] == ["many-failures"]
    writer = Writer(tmp_path / "homelab.db")
    writer.db.execute("INSERT INTO nodes (name, created) VALUES ('n1', 0)")
    writer.start()
    gate, entered = threading.Event(), threading.Event()

    def slow_listener(db, alert):  # runs inside the alerts' transaction, in the writer thread
        entered.set()
        assert gate.wait(30), "the test never opened the gate"

    told: list[tuple[str, int]] = []
    svc = RulesService(rules, writer, [slow_listener], tick=0.05,
                       on_records=lambda recs: told.append((threading.current_thread().name, len(recs))))
    ticks = []
    tick = svc.engine.tick
    svc.engine.tick = lambda *a, **kw: (ticks.append(1), tick(*a, **kw))[1]
    writer.subscribers.append(svc.subscriber)
    svc.start()
    try:
        evs = [wire.Log(ts=time.time(), source="s", message=f"login failed {i}") for i in (1, 2)]
        frame = wire.Frame(node="n1", sent=time.time(), seqs=[1, 2], events=evs, typed=True)
        await writer.ingest("n1", frame, [_json(e).decode() for e in evs], None)
        await async_wait_for(entered.is_set, 30, what="the alerts' store to start")
        # the store is held in the writer; the rules thread goes on ticking meanwhile
        n = len(ticks)
        await async_wait_for(lambda: len(ticks) >= n + 3, 30, what="ticks while the store waits")
        assert told == [] and svc.stats["records"] == 0  # reported only after the COMMIT
        gate.set()
        await async_wait_for(lambda: told, 30, what="the store reported")
        assert told[0][0] == "hub-writer" and svc.stats["records"] >= 1
        rows = writer.run_sync(lambda db: db.execute("SELECT rule, state, count FROM alerts").fetchall())
        assert [tuple(r) for r in rows] == [("many-failures", "firing", 2)]
    finally:
        gate.set()
        svc.stop()
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)


def _waiting(svc: RulesService) -> bool:
    """The rules thread is blocked waiting for a wake (its frame is at the queue's get)."""
    f = sys._current_frames().get(svc._thread.ident or 0)
    return (f is not None and f.f_code.co_name == "_run"
            and "self.queue.get(timeout" in linecache.getline(f.f_code.co_filename, f.f_lineno))


async def test_a_bulk_commit_waits_for_the_tick_and_an_urgent_one_takes_it_along(tmp_path):
    """Groups of bulk kinds only (what agents hold up to ship_linger anyway) do not wake the
    rules thread; the next group with another kind does, and both are evaluated in order."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "r.yaml").write_text(RULES)
    rules, _ = load_paths([tmp_path / "r"])
    writer = Writer(tmp_path / "homelab.db")
    writer.db.execute("INSERT INTO nodes (name, created) VALUES ('n1', 0)")
    writer.start()
    svc = RulesService(rules, writer, [], tick=3600.0)  # after the first tick, only wakes
    fed: list[str] = []
    feed = svc.engine.feed
    svc.engine.feed = lambda node, eid, ev, t=None: (fed.append(type(ev).__name__), feed(node, eid, ev, t))[1]
    writer.subscribers.append(svc.subscriber)
    svc.start()
    try:
        await async_wait_for(lambda: _waiting(svc), 30, what="the rules thread waiting after its first tick")
        seq = 0

        async def send(*evs):
            nonlocal seq
            seqs = list(range(seq + 1, seq + 1 + len(evs)))
            seq += len(evs)
            frame = wire.Frame(node="n1", sent=time.time(), seqs=seqs, events=list(evs), typed=True)
            await writer.ingest("n1", frame, [_json(e).decode() for e in evs], None)

        now = time.time()
        await send(wire.Metrics(ts=now, samples={"load1": 0.5}), wire.Log(ts=now, source="s", message="x failed"))
        # handed over (the writer calls subscribers after the ack), and no wake queued
        await async_wait_for(lambda: len(svc.inbox) == 1, 30, what="the bulk group in the inbox")
        assert svc.queue.qsize() == 0 and fed == []
        await send(wire.FileChange(ts=now, action="modify", path="/etc/hosts"))
        await async_wait_for(lambda: len(fed) == 3 and not svc.inbox, 30, what="both groups evaluated")
        assert fed == ["Metrics", "Log", "FileChange"]
    finally:
        svc.stop()
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)
