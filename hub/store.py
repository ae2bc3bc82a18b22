"""SQLite access: one writer thread owns the only write connection; reads use their own.

Ingest batches queue up for the writer, which commits everything waiting in one
transaction (group commit) and only then resolves each batch's future, so an ack always
means "on disk". The writer owns each node's last committed sequence number, which makes
deduplication and gap detection a dictionary lookup instead of a query.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

from agent import wire
from hub import project
from hub.errors import BadRequest, Conflict, Unavailable
from hub.schema import migrate

log = logging.getLogger(__name__)

# A group commit stops growing here, so a job (an alert the rules engine stores, a join)
# waits for at most the group in progress; and the group is written in pieces (a batch's
# slices, or its batches), so a job that comes in meanwhile gets in once a slice's worth is
# written: that much is committed first (bench rules, commit-to-alert while the writer is
# saturated). With no job waiting a group is still one transaction: a commit per 250 events
# measured ~15 % more hub CPU per event under saturated ingest (bench ingest), 500 nothing.
GROUP_MAX_EVENTS = 1_000
SLICE_EVENTS = 500
_WAKE = object()  # in the ingest queue: a job is waiting in the job queue
CHECKPOINT_EVERY = 0.5  # seconds between WAL checkpoints, run beside the writer
KIND_OF = {t: t.__struct_config__.tag for t in typing.get_args(wire.AnyEvent)}


def connect(path: Path | str, *, readonly: bool = False, timeout: float = 5.0) -> sqlite3.Connection:
    if readonly:
        db = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=timeout, isolation_level=None,
            check_same_thread=False,
        )
        db.execute("PRAGMA query_only = ON")
    else:
        db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process death
        db.execute("PRAGMA foreign_keys = ON")
    db.row_factory = sqlite3.Row
    return db


def private_dir(path: Path | str) -> Path:
    """Create the data directory 0700 whatever the umask (it holds credentials' hashes, the
    signing key, every node's files and logs); an existing one is left as the admin made it."""
    path = Path(path)
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
            os.chmod(path, 0o700)
    return path


def _private_db(path: Path) -> bool:
    """Create the database file 0600 before SQLite does (SQLite would use 0644 & ~umask, and
    gives the -wal and -shm files the database file's mode); tighten an existing one that
    others can read. Returns whether the database is new."""
    fresh = not path.exists() or path.stat().st_size == 0
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if p.stat().st_mode & 0o077:
                log.warning("%s was readable by other users: made it 0600", p)
                os.chmod(p, 0o600)
    return fresh


def open_db(path: Path | str) -> sqlite3.Connection:
    """Open (creating and migrating) the hub database for writing."""
    private_dir(Path(path).parent)
    fresh = _private_db(Path(path))
    db = connect(path)
    if fresh:  # must precede the first table; lets retention hand pages back to the OS
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("VACUUM")
    migrate(db)
    return db


@dataclass(slots=True)
class IngestItem:
    node: str
    frame: wire.Frame  # seqs strictly increasing, events decoded
    datas: list[str]  # each event as JSON, parallel to frame.events
    received: float
    address: str | None
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


@dataclass(slots=True)
class Committed:
    """What subscribers (rules, exporters) see after a commit."""

    id: int
    node: str
    seq: int
    ts: float
    kind: str
    event: Any


@dataclass(slots=True)
class IngestResult:
    ack: int
    stored: int
    duplicates: int


class _Job:
    __slots__ = ("fn", "future", "loop", "done", "then")

    def __init__(self, fn, future=None, loop=None, then=None):
        self.fn, self.future, self.loop, self.then = fn, future, loop, then
        self.done = threading.Event()


def _resolve(loop, fut, result=None, exc=None):
    def set_():
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    loop.call_soon_threadsafe(set_)


def _settle(outcomes: list[tuple[asyncio.Future, Any]]) -> None:
    """On the event loop: resolve a transaction's batches (an exception is an error)."""
    for fut, out in outcomes:
        if fut.done():
            continue
        if isinstance(out, BaseException):
            fut.set_exception(out)
        else:
            fut.set_result(out)


def _resolve_all(outcomes: list[tuple[IngestItem, Any]]) -> None:
    """One wake of each event loop per transaction, not one per batch: a wake is a write to
    the loop's self-pipe and a thread switch (bench fleet)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
    for item, out in outcomes:
        by_loop.setdefault(item.loop, []).append((item.future, out))
    for loop, outs in by_loop.items():
        loop.call_soon_threadsafe(_settle, outs)


class Writer:
    """The one writer. Start with ``start()``; stop with ``stop()`` (drains the queue)."""

    def __init__(self, path: Path | str, busy_timeout: float = 2.0):
        self.path = Path(path)
        self.db = open_db(self.path)
        self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        # A checkpoint inside COMMIT (SQLite's default, every 1,000 pages) copies the WAL into
        # the database and fsyncs while every batch and alert waits: the p99 of bench rules.
        # Started, the writer leaves them to a thread of their own (_checkpointer).
        self.db.execute("PRAGMA wal_autocheckpoint = 0")
        self.queue: queue.SimpleQueue = queue.SimpleQueue()  # C: no Condition to wake per put
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()  # served before waiting batches
        self.last_seq: dict[str, int] = {
            r["name"]: r["last_seq"] for r in self.db.execute("SELECT name, last_seq FROM nodes")
        }
        self.next_id = (self.db.execute("SELECT max(id) FROM events").fetchone()[0] or 0) + 1
        self.subscribers: list[Callable[[list[Committed]], None]] = []
        self.projector = project.Projector(self.db)
        self.stats = {"batches": 0, "events": 0, "duplicates": 0, "commits": 0, "failed_commits": 0}
        self._thread = threading.Thread(target=self._run, name="hub-writer", daemon=True)
        self._checkpoints = threading.Thread(target=self._checkpointer, name="hub-checkpoint", daemon=True)
        self._stopping = False
        self._stopped = threading.Event()

    # -- public API (any thread) ---------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._checkpoints.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        self.queue.put(None)
        self._thread.join(timeout)
        self._stopped.set()
        if self._checkpoints.is_alive():
            self._checkpoints.join(timeout)
        self.db.close()  # the last connection to close checkpoints what is left

    def _checkpointer(self) -> None:
        """PASSIVE checkpoints on a connection of their own: they copy committed pages while
        the writer goes on (SQLite releases the GIL meanwhile) and never block it."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA synchronous = NORMAL")
            while not self._stopped.wait(CHECKPOINT_EVERY):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as e:  # busy or I/O: the next round tries again
                    log.warning("WAL checkpoint failed: %s", e)
        finally:
            db.close()

    @property
    def depth(self) -> int:
        return self.queue.qsize() + self.jobs.qsize()

    async def ingest(self, node: str, frame: wire.Frame, datas: list[str], address: str | None) -> IngestResult:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.queue.put(IngestItem(node, frame, datas, time.time(), address, fut, loop))
        return await fut

    async def run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(db)`` in the writer thread inside its own transaction."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._submit(_Job(fn, fut, loop))
        return await fut

    def post(self, fn: Callable[[sqlite3.Connection], Any],
             then: Callable[[BaseException | None], None] | None = None) -> None:
        """Queue ``fn(db)`` for the writer thread, in its own transaction, without waiting;
        from any thread, the writer's own included (it runs after the group in progress).
        Jobs run in the order they are queued. ``then(error)`` is called in the writer
        thread after the COMMIT (error None) or the ROLLBACK."""
        self._submit(_Job(fn, then=then))

    def _submit(self, job: _Job) -> None:
        self.jobs.put(job)
        self.queue.put(_WAKE)

    def run_sync(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Like ``run`` for non-async callers (tests, CLI in-process)."""
        box: dict[str, Any] = {}

        def wrapped(db):
            try:
                box["r"] = fn(db)
            except BaseException as e:
                box["e"] = e
                raise  # so _run_job rolls back: a failed job must leave nothing behind

        job = _Job(wrapped)
        self._submit(job)
        job.done.wait()
        if "e" in box:
            raise box["e"]
        return box.get("r")

    # -- writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if self._step() is False:
                    return
            except Exception:  # the one writer must outlive anything; callers get their errors
                log.exception("writer loop")

    def _step(self) -> bool:
        """One round of the writer loop: the waiting jobs, then a group of waiting batches
        committed together. Jobs go first (an alert must not queue behind a backlog of
        ingest); a job queued meanwhile runs right after the group. False when asked to stop."""
        item = self.queue.get()
        self._run_jobs()
        if item is None:
            return False
        if item is _WAKE:
            return True
        group = [item]
        n = len(item.datas)
        stop = False
        while n < GROUP_MAX_EVENTS:
            try:
                nxt = self.queue.get_nowait()
            except queue.Empty:
                break
            if nxt is _WAKE:
                continue  # its job runs after this group
            if nxt is None:
                stop = True
                break
            group.append(nxt)
            n += len(nxt.datas)
        self._commit_group(group)
        self._run_jobs()
        return not stop

    def _run_jobs(self) -> None:
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            self._run_job(job)

    def _run_job(self, job: _Job) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            result = job.fn(self.db)
            self.db.execute("COMMIT")
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if job.future is not None:
                _resolve(job.loop, job.future, exc=_store_error(e))
            job.done.set()
            self._then(job, e)
            return
        if job.future is not None:
            _resolve(job.loop, job.future, result)
        job.done.set()
        self._then(job, None)

    @staticmethod
    def _then(job: _Job, error: BaseException | None) -> None:
        if job.then is not None:
            try:
                job.then(error)
            except Exception:  # the one writer must outlive a broken callback
                log.exception("writer job callback failed")

    def _commit_group(self, group: list[IngestItem]) -> None:
        """Commit a group; on failure make sure only the batch at fault pays for it. A store
        that cannot write (locked, full) fails the group with 503, to be retried; a batch the
        store cannot hold (a value SQLite refuses) is found by committing the group's batches
        one by one and is refused alone with 400, so the agent sets it aside."""
        try:
            self._try_commit(group)
            return
        except Exception as e:  # noqa: BLE001 - classified below, never kills the writer
            err = _store_error(e)
            if len(group) > 1 and not isinstance(err, Unavailable):
                for item in group:
                    self._commit_group([item])
                return
            if not isinstance(err, Unavailable):
                log.error("batch from %s refused by the store: %r", group[0].node, e)
                err = BadRequest(f"the store cannot hold this batch: {type(e).__name__}: {e}")
            else:
                log.warning("commit of %d batches failed: %s", len(group), e)
            self.stats["failed_commits"] += 1
            _resolve_all([(item, err) for item in group])

    def _try_commit(self, group: list[IngestItem]) -> None:
        """Commit a group, or roll back what is not yet committed and raise. A job waiting
        after a slice is written gets a commit of everything so far first; the batches done by
        then are acked and the rest follows in a new transaction (a batch cut there keeps its
        committed events: nodes.last_seq says where it stands, and a retry finds them
        duplicates)."""
        last = dict(self.last_seq)  # working copy; published only after COMMIT
        tx = _Tx(self.next_id, want_committed=bool(self.subscribers))
        add = self.projector.add
        self.projector.begin()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for item in group:
                node, f = item.node, item.frame
                prev = last.get(node, 0)
                start = bisect.bisect_right(f.seqs, prev)  # everything before is a duplicate
                n_new = len(f.seqs) - start
                if n_new:
                    first = f.events[start]
                    covered = isinstance(first, wire.Dropped) and first.first_seq <= prev + 1
                    if f.seqs[start] != prev + 1 and not covered:
                        tx.outcomes.append((item, Conflict(
                            f"sequence gap: expected seq {prev + 1}, got {f.seqs[start]}",
                            expected=prev + 1, got=f.seqs[start])))
                        continue
                    for a in range(start, len(f.seqs), SLICE_EVENTS):
                        b = min(a + SLICE_EVENTS, len(f.seqs))
                        seqs, evs, datas = f.seqs[a:b], f.events[a:b], item.datas[a:b]
                        kinds = [KIND_OF.get(type(e)) or e.kind for e in evs]
                        tss = [e.ts for e in evs]
                        ids = range(tx.next_id, tx.next_id + len(seqs))
                        for i, (seq, ts, ev) in enumerate(zip(seqs, tss, evs, strict=True)):
                            slim = add(node, seq, ts, ev)
                            if slim is not None:  # its fields are in a table of their own
                                datas[i] = slim  # a slice: the item's own list is untouched
                        rows = list(zip(ids, repeat(node), seqs, tss, kinds, datas))
                        project.insert_rows(
                            self.db, "INSERT INTO events (id, node, seq, ts, kind, data) VALUES (?, ?, ?, ?, ?, ?)", rows)
                        self.projector.flush()
                        tx.events += len(rows)
                        if tx.committed is not None:
                            tx.committed.extend(map(Committed, ids, repeat(node), seqs, tss, kinds, evs))
                        tx.next_id += len(seqs)
                        last[node] = seqs[-1]
                        tx.node_rows[node] = (last[node], item.received, f.sent - item.received, item.address, node)
                        if b < len(f.seqs):
                            tx = self._let_jobs_in(last, tx)
                tx.node_rows[node] = (last.get(node, 0), item.received, f.sent - item.received, item.address, node)
                tx.outcomes.append((item, IngestResult(last.get(node, 0), n_new, start)))
                if item is not group[-1]:
                    tx = self._let_jobs_in(last, tx)
            self._commit_tx(last, tx)
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self.projector.rollback()
            raise

    def _let_jobs_in(self, last: dict[str, int], tx: _Tx) -> _Tx:
        """Between two pieces of a group: when a job is waiting and this transaction has
        written a slice's worth, commit what is written, run the jobs, and go on in a new one."""
        if tx.events < SLICE_EVENTS or self.jobs.empty():
            return tx
        self._commit_tx(last, tx)
        self._run_jobs()
        self.projector.begin()
        self.db.execute("BEGIN IMMEDIATE")
        return _Tx(tx.next_id, want_committed=tx.committed is not None)

    def _commit_tx(self, last: dict[str, int], tx: _Tx) -> None:
        """COMMIT, then the new state, the acks, the subscribers."""
        self.db.executemany(
            "UPDATE nodes SET last_seq = ?, last_seen = ?, clock_skew = ?, address = coalesce(?, address) WHERE name = ?",
            list(tx.node_rows.values()),
        )
        self.db.execute("COMMIT")
        self.projector.committed()
        self.last_seq.update(last)
        self.next_id = tx.next_id
        self.stats["commits"] += 1
        self.stats["batches"] += len(tx.outcomes)
        self.stats["events"] += tx.events
        for _item, out in tx.outcomes:
            if not isinstance(out, Exception):
                self.stats["duplicates"] += out.duplicates
        _resolve_all(tx.outcomes)
        if tx.committed:
            for sub in self.subscribers:
                try:
                    sub(tx.committed)
                except Exception:  # a broken subscriber must not stop ingest
                    log.exception("commit subscriber failed")


class _Tx:
    """What one transaction of the writer has written, until its COMMIT."""

    __slots__ = ("next_id", "events", "committed", "node_rows", "outcomes")

    def __init__(self, next_id: int, want_committed: bool):
        self.next_id = next_id
        self.events = 0
        self.committed: list[Committed] | None = [] if want_committed else None
        self.node_rows: dict[str, tuple] = {}
        self.outcomes: list[tuple[IngestItem, Any]] = []


def _store_error(e: BaseException) -> BaseException:
    if isinstance(e, sqlite3.OperationalError):
        msg = str(e)
        if "locked" in msg or "busy" in msg or "full" in msg or "disk" in msg or "I/O" in msg:
            return Unavailable(f"database unavailable: {msg}")
    return e
