"""The writer serves jobs (alerts the rules engine stores, joins, CLI work) before waiting
ingest batches, and bounds a group commit, so a job never waits behind a backlog."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from agent import wire
from hub import store
from hub.errors import Unavailable
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



def _job_counting_events(seen: list):
    return store._Job(lambda db: seen.append(db.execute("SELECT count(*) FROM events").fetchone()[0]))


async def test_a_job_waiting_gets_in_at_the_next_slice_of_a_group(tmp_path):
    """A job that comes while a 1,000-event batch is written waits for one slice, not the
    batch: what is written so far is committed first. With no job waiting a batch is one
    transaction. The ack waits for the whole batch."""
    w = Writer(tmp_path / "homelab.db")  # not started: _try_commit runs in this thread
    w.db.execute("INSERT INTO nodes (name, created) VALUES ('n1', 0)")
    loop = asyncio.get_running_loop()
    k, n = store.SLICE_EVENTS, 4 * store.SLICE_EVENTS
    f = _frame(1, n)
    fut = loop.create_future()
    w._try_commit([IngestItem("n1", f, _json_of(f), 0.0, None, fut, loop)])
    assert w.stats["commits"] == 1  # nothing waited: one transaction
    seen: list[int] = []
    w.jobs.put(_job_counting_events(seen))  # as the rules thread would while the writer writes
    f2 = _frame(n + 1, n)
    fut2 = loop.create_future()
    w._try_commit([IngestItem("n1", f2, _json_of(f2), 0.0, None, fut2, loop)])
    assert seen == [n + k]  # it ran after the first slice of the second batch
    assert w.stats["commits"] == 3 and w.stats["batches"] == 2
    r = await asyncio.wait_for(fut2, 10)
    assert (r.ack, r.stored, r.duplicates) == (2 * n, n, 0)
    assert tuple(w.db.execute("SELECT count(*), count(DISTINCT seq) FROM events").fetchone()) == (2 * n, 2 * n)
    w.db.close()



async def test_a_job_waiting_gets_in_between_the_small_batches_of_a_group(tmp_path):
    """A group of small batches: once a slice's worth is written, a waiting job goes first;
    the batches written by then are acked with that commit, the rest after."""
    w = Writer(tmp_path / "homelab.db")
    w.db.execute("INSERT INTO nodes (name, created) VALUES ('n1', 0)")
    loop = asyncio.get_running_loop()
    per = store.SLICE_EVENTS * 3 // 5  # two batches make a slice's worth
    items = []
    for k in range(4):
        f = _frame(1 + k * per, per)
        items.append(IngestItem("n1", f, _json_of(f), 0.0, None, loop.create_future(), loop))
    seen: list[int] = []
    w.jobs.put(_job_counting_events(seen))
    w._try_commit(items)
    assert seen == [2 * per]
    assert w.stats["commits"] == 2 and w.stats["batches"] == 4
    results = await asyncio.wait_for(asyncio.gather(*(i.future for i in items)), 10)
    assert [r.ack for r in results] == [(k + 1) * per for k in range(4)]
    w.db.close()

async def test_a_batch_cut_between_slices_is_resent_without_loss_or_double(tmp_path, monkeypatch):
    """The store fails after a job's early commit (as a hub stopped there would): the agent is
    told to retry (503), and the retried batch stores exactly the rest."""
    path = tmp_path / "homelab.db"
    w = Writer(path)
    w.db.execute("INSERT INTO nodes (name, created) VALUES ('n1', 0)")
    loop = asyncio.get_running_loop()
    real, calls = w.projector.flush, []

    def fail_second():
        calls.append(1)
        if len(calls) == 2:
            raise sqlite3.OperationalError("database is locked")
        real()

    monkeypatch.setattr(w.projector, "flush", fail_second)
    k, n = store.SLICE_EVENTS, 3 * store.SLICE_EVENTS
    f = _frame(1, n)
    fut = loop.create_future()
    seen: list[int] = []
    w.jobs.put(_job_counting_events(seen))
    w._commit_group([IngestItem("n1", f, _json_of(f), 0.0, None, fut, loop)])
    with pytest.raises(Unavailable):
        await asyncio.wait_for(fut, 10)
    assert seen == [k]
    w.db.close()
    w = Writer(path)  # a restarted hub: last_seq from the nodes table
    assert w.last_seq == {"n1": k}
    w.start()
    try:
        r = await asyncio.wait_for(w.ingest("n1", f, _json_of(f), None), 30)
        assert (r.ack, r.stored, r.duplicates) == (n, n - k, k)
        rows = await w.run(lambda db: db.execute("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM events").fetchone())
        assert tuple(rows) == (n, n, 1, n)
    finally:
        await loop.run_in_executor(None, w.stop)


async def test_a_group_wakes_the_loop_once_and_a_posted_job_reports_after_commit(tmp_path):
    """A transaction's acks reach the event loop in one wake (a write to its self-pipe), not
    one per batch; ``post`` queues a job without waiting and reports its outcome after the
    COMMIT (visible to another connection) or the ROLLBACK."""
    w = Writer(tmp_path / "homelab.db")  # not started: _try_commit runs in this thread
    w.db.execute("INSERT INTO nodes (name, created) VALUES ('n1', 0)")
    loop = asyncio.get_running_loop()
    wakes = []
    real = loop.call_soon_threadsafe

    def counting(cb, *args):
        wakes.append(cb)
        return real(cb, *args)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        items = []
        for k in range(3):
            f = _frame(1 + k * 5, 5)
            items.append(IngestItem("n1", f, _json_of(f), 0.0, None, loop.create_future(), loop))
        w._try_commit(items)
        results = await asyncio.wait_for(asyncio.gather(*(i.future for i in items)), 10)
        assert [r.ack for r in results] == [5, 10, 15] and len(wakes) == 1
    finally:
        del loop.call_soon_threadsafe
    w.start()
    try:
        outcomes: list = []
        other = sqlite3.connect(tmp_path / "homelab.db", check_same_thread=False)

        def then(error):
            seen = other.execute("SELECT count(*) FROM ingest_errors").fetchone()[0]
            outcomes.append((error, seen))

        w.post(lambda db: db.execute("INSERT INTO ingest_errors (ts, address, status, reason)"
                                     " VALUES (1, NULL, 400, 'x')"), then=then)

        def fails(db):
            db.execute("INSERT INTO ingest_errors (ts, address, status, reason) VALUES (2, NULL, 400, 'y')")
            raise ValueError("no")

        w.post(fails, then=then)
        deadline = loop.time() + 30
        while len(outcomes) < 2:
            assert loop.time() < deadline, "posted jobs did not report"
            await asyncio.sleep(0.02)
        assert outcomes[0] == (None, 1)  # committed before it was told
        assert isinstance(outcomes[1][0], ValueError) and outcomes[1][1] == 1  # rolled back
        other.close()
    finally:
        await loop.run_in_executor(None, w.stop)
