"""The writer serves jobs (alerts the rules engine stores, joins, CLI work) before waiting
ingest batches, and bounds a group commit, so a job never waits behind a backlog."""

from __future__ import annotations

import asyncio

from agent import wire
from hub import store
from hub.ingest import _json_of
from hub.store import IngestItem, Writer


def _frame(seq0: int, n: int):
    evs = [(seq0 + i, wire.encode_event(wire.Log(ts=1.0 + i, source="s", message=f"line {seq0 + i}")))
           for i in range(n)]
    return wire.decode_batch(wire.encode_batch("n1", 1.0, evs))


async def test_a_job_runs_before_the_waiting_backlog(tmp_path):
    w = Writer(tmp_path / "homelab.db")
    w.db.execute("INSERT INTO nodes (name, created) VALUES ('n1', 0)")
    loop = asyncio.get_running_loop()
    futs = []
    per = store.GROUP_MAX_EVENTS // 2
    for k in range(8):  # four groups' worth queued before the writer starts
        f = _frame(1 + k * per, per)
        futs.append(loop.create_future())
        w.queue.put(IngestItem("n1", f, _json_of(f), 0.0, None, futs[-1], loop))
    seen = asyncio.ensure_future(w.run(lambda db: db.execute("SELECT count(*) FROM events").fetchone()[0]))
    await asyncio.sleep(0)  # the job is queued behind the batches
    assert w.jobs.qsize() == 1
    w.start()
    try:
        assert await asyncio.wait_for(seen, 30) == 0  # before any of the backlog
        results = await asyncio.wait_for(asyncio.gather(*futs), 30)
        assert [r.ack for r in results] == [(k + 1) * per for k in range(8)]
        assert w.stats["commits"] >= 4  # bounded groups
        assert await w.run(lambda db: db.execute("SELECT count(*) FROM logs").fetchone()[0]) == 8 * per
    finally:
        await loop.run_in_executor(None, w.stop)


async def test_checkpoints_run_beside_the_writer(tmp_path):
    """The writer never checkpoints inside COMMIT (wal_autocheckpoint = 0); its checkpoint
    thread copies committed pages into the database file while the writer goes on."""
    w = Writer(tmp_path / "homelab.db")
    w.db.execute("INSERT INTO nodes (name, created) VALUES ('n1', 0)")
    assert w.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    db_file = tmp_path / "homelab.db"
    loop = asyncio.get_running_loop()
    w.start()
    try:
        size0 = db_file.stat().st_size
        for k in range(5):
            f = _frame(1 + k * 1000, 1000)
            await w.ingest("n1", f, _json_of(f), None)
        deadline = loop.time() + 30
        while db_file.stat().st_size <= size0:  # pages reach the file only by a checkpoint
            assert loop.time() < deadline, "no checkpoint within 30 s"
            await asyncio.sleep(0.05)
    finally:
        await loop.run_in_executor(None, w.stop)
