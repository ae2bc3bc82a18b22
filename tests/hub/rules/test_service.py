"""The rules service on a real writer and SQLite file: a small commit is evaluated in the
writer thread (no hand-off to the rules thread), a large one on the rules thread, and the
alerts' stores keep their order whichever thread evaluated what."""

from __future__ import annotations

import asyncio
import threading
import time

import msgspec

from agent import wire
from hub.rules import service as rules_service
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


def _service(tmp_path, on_records=None) -> tuple[Writer, RulesService]:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "r.yaml").write_text(RULES)
    rules, errors = load_paths([tmp_path / "r"])
    assert not errors and [r.name for r in rules] == ["many-failures"]
    writer = Writer(tmp_path / "homelab.db")
    writer.db.execute("INSERT INTO nodes (name, created) VALUES ('n1', 0)")
    writer.start()
    svc = RulesService(rules, writer, [], on_records=on_records)
    writer.subscribers.append(svc.subscriber)
    svc.start()
    return writer, svc


class Sender:
    def __init__(self, writer: Writer):
        self.writer, self.seq = writer, 0

    async def send(self, n: int) -> None:
        seqs, evs = [], []
        for _ in range(n):
            self.seq += 1
            seqs.append(self.seq)
            evs.append(wire.Log(ts=time.time(), source="s", message=f"login failed {self.seq}"))
        datas = [_json(e).decode() for e in evs]
        frame = wire.Frame(node="n1", sent=time.time(), seqs=seqs, events=evs, typed=True)
        await self.writer.ingest("n1", frame, datas, None)


def _stored(writer: Writer) -> list[tuple]:
    return writer.run_sync(lambda db: db.execute("SELECT rule, state, count FROM alerts").fetchall())


async def test_a_small_commit_is_evaluated_and_stored_without_the_rules_thread(tmp_path):
    threads = []
    writer, svc = _service(tmp_path, on_records=lambda recs: threads.append(threading.current_thread().name))
    try:
        s = Sender(writer)
        for _ in range(3):
            await s.send(2)
        rows = await async_wait_for(lambda: [r for r in _stored(writer) if r[2] == 6], 30, what="count 6 stored")
        assert [tuple(r) for r in rows] == [("many-failures", "firing", 6)]
        assert svc.handed == 0 and svc.stats["events"] == 6  # nothing went through the queue
        assert threads and set(threads) == {"hub-writer"}  # stored by the writer, told after COMMIT
    finally:
        svc.stop()
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)


async def test_small_commits_wait_behind_a_queued_large_one(tmp_path):
    writer, svc = _service(tmp_path)
    try:
        s = Sender(writer)
        await s.send(1)  # the alert opens (count 1), evaluated inline
        await async_wait_for(lambda: _stored(writer), 30, what="the alert stored")
        big = rules_service.INLINE_EVENTS + 1
        with svc.lock:  # the engine is busy: everything now queues for the rules thread
            await s.send(big)
            await s.send(1)
            # the ack comes before the writer calls its subscribers
            await async_wait_for(lambda: svc.handed == 2, 30, what="both commits queued")
            assert svc.taken == 0
        # the engine is free again, but older commits are still queued: this one queues too,
        # or it would be counted before them (and its store overwritten by theirs)
        await s.send(1)
        total = 1 + big + 1 + 1
        await async_wait_for(lambda: svc.taken == svc.handed, 30, what="the queue evaluated")
        rows = await async_wait_for(lambda: [r for r in _stored(writer) if r[2] == total], 30,
                                    what=f"count {total} stored")
        assert len(rows) == 1 and svc.stats["events"] == total
        handed = svc.handed
        await s.send(1)  # and once the queue is empty, inline again
        await async_wait_for(lambda: [r for r in _stored(writer) if r[2] == total + 1], 30, what="count + 1")
        assert svc.handed == handed
    finally:
        svc.stop()
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)
