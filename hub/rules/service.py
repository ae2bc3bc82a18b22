"""The live rules engine: a thread between the writer's commits and the alerts table.

The writer hands each committed group to ``subscriber``. A large one goes to the rules
thread (a queue put: ingest never waits for rules); a small one (up to ``INLINE_EVENTS``,
which at fleet scale is nearly every commit) is evaluated right there in the writer
thread when the engine is free and nothing older is queued, which saves the two threads
waking each other for a few events. The thread ticks once a second for ``for:``, windows,
absence and twin queries. What changed is queued to the writer as a job of its own (the
alerts' transaction), in the order it was drained. Twin queries run on their own read-only
connection. A reload (``homelab-hub rules reload`` or SIGHUP) swaps the whole rule set
between two rounds.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable

from hub.rules import alerts
from hub.rules.conditions import run_query
from hub.rules.engine import Engine
from hub.rules.loader import Rule
from hub.store import Committed, Writer, connect

log = logging.getLogger(__name__)

# A commit of at most this many events is evaluated in the writer thread (~1.2 µs an event
# with the shipped rules) instead of waking the rules thread: at 500 nodes the wake-ups and
# the alerts' round trip through the writer cost a quarter of the hub's CPU (bench fleet).
# Larger commits (a backlog, bench ingest's 1,000-event batches) stay off the writer.
INLINE_EVENTS = 100

ABSENT_SQL = (
    "SELECT name AS node, last_seen, :now - last_seen AS silent_for, :now - last_seen AS value"
    " FROM nodes WHERE last_seen IS NOT NULL AND :now - last_seen >= :absent_for"
)


def _last_reload(db: sqlite3.Connection) -> int:
    try:
        return db.execute("SELECT coalesce(max(id), 0) FROM rule_reloads").fetchone()[0]
    except sqlite3.Error:
        return 0


def periodic_rows(db: sqlite3.Connection, rule: Rule, now: float) -> list[dict]:
    """Rows of an absence or twin-state rule: each row is an active instance."""
    if rule.source == "absent":
        sql, params = ABSENT_SQL, {"now": now, "absent_for": rule.absent_for}
    else:
        assert rule.sql is not None, rule.name  # the loader gives every query rule its SQL
        sql, params = rule.sql, {"now": now}
    cols, rows = run_query(db, sql, params, rule.timeout)
    return [dict(zip(cols, tuple(r), strict=True)) for r in rows]


class RulesService:
    def __init__(self, rules: list[Rule], writer: Writer, listeners: list[Callable],
                 on_records: Callable[[list[dict]], None] | None = None,
                 clock: Callable[[], float] = time.time, tick: float = 1.0,
                 loader: Callable[[], tuple[list[Rule], list]] | None = None):
        self.writer, self.listeners, self.on_records = writer, listeners, on_records
        self.clock, self.tick_every = clock, tick
        self.rules = {r.name: r for r in rules}
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.read_db = connect(writer.path, readonly=True)
        self.engine = Engine(rules, next_id=alerts.next_id(self.read_db))
        self.engine.restore(alerts.open_alerts(self.read_db))
        self.stats: dict[str, float] = {"events": 0, "records": 0, "store_failures": 0, "lag_max": 0}
        self._thread = threading.Thread(target=self._run, name="hub-rules", daemon=True)
        self._stop = threading.Event()
        self.loader = loader  # for reloads: every rule file again, (rules, errors)
        self.reload_wanted = threading.Event()  # SIGHUP
        self.reload_seen = _last_reload(self.read_db)  # requests older than this start are moot
        # the engine is used under this lock: by the rules thread, by the writer thread for a
        # small commit (never waiting for it) and for verdicts (asked by the proposals
        # worker). Never held while waiting for the writer.
        self.lock = threading.Lock()
        # commits queued to the thread (counted by the writer thread) and evaluated by it
        # (under the lock): equal means nothing older waits, so a commit may go inline
        self.handed = self.taken = 0

    def verdict(self, alert_id: int, since: float, now: float) -> tuple[str, float | None]:
        with self.lock:
            return self.engine.verdict(alert_id, since, now)

    def subscriber(self, committed: list[Committed]) -> None:
        """Called by the writer thread after each commit: evaluate a small commit at once if
        the engine is free and nothing older is queued, else hand it over; never waits."""
        t0 = time.monotonic()
        if len(committed) <= INLINE_EVENTS and self.lock.acquire(blocking=False):
            try:
                if self.handed == self.taken:
                    self._feed(committed)
                    self._store_drained([t0])
                    return
            finally:
                self.lock.release()
        self.handed += 1
        self.queue.put((t0, committed))

    def _feed(self, batch: list[Committed]) -> None:
        """Evaluate committed events (the caller holds the lock)."""
        # event time drives windows (a backlog replays at its own pace), but a node whose
        # clock runs ahead must not push alerts into the future
        now = self.clock()
        for c in batch:
            try:
                self.engine.feed(c.node, c.id, c.event, c.ts if c.ts <= now else now)
            except Exception:  # noqa: BLE001 - a bad event must not stop evaluation
                log.exception("rules: evaluating event %s failed", c.id)
        self.stats["events"] += len(batch)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.queue.put(None)
        self._thread.join(timeout)
        self.read_db.close()

    def _run(self) -> None:
        next_tick = 0.0
        while not self._stop.is_set():
            wait = max(0.0, next_tick - time.monotonic())
            try:
                item = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
            except queue.Empty:
                item = ()
            if item is None:
                break
            committed_at = []
            n = 0
            while item:
                t0, batch = item
                committed_at.append(t0)
                with self.lock:
                    self._feed(batch)
                    self.taken += 1
                n += len(batch)
                if n > 20_000:
                    break
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    item = ()
                if item is None:
                    self._stop.set()
                    break
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.tick_every
                self._maybe_reload()
                try:
                    with self.lock:
                        self.engine.tick(self.clock(), lambda r, now: periodic_rows(self.read_db, r, now))
                except Exception:  # noqa: BLE001
                    log.exception("rules: tick failed")
            self._flush(committed_at)

    def reload(self) -> tuple[bool, str]:
        """Load every rule file again and swap the set in whole, or keep the running one
        untouched if any file has an error. Alerts of unchanged rules are kept."""
        if self.loader is None:
            return False, "this hub has no rule files to reload"
        try:
            rules, errors = self.loader()
        except Exception as e:  # noqa: BLE001 - a reload must never stop evaluation
            log.exception("rules: reload failed")
            return False, f"reload failed: {type(e).__name__}: {e}"
        if errors:
            for err in errors:
                log.error("rules: reload refused: %s", err)
            return False, (f"refused, the running rules are unchanged: {len(errors)} error(s)\n"
                           + "\n".join(str(err) for err in errors))
        with self.lock:
            old = self.engine.rules
            self.engine = self.engine.reloaded(rules, self.clock())
            self.rules = {r.name: r for r in rules}
        changed = sorted(n for n, r in self.rules.items()
                         if n in old and (r.spec, r.macros) != (old[n].spec, old[n].macros))
        added, removed = sorted(set(self.rules) - set(old)), sorted(set(old) - set(self.rules))
        text = (f"reloaded {len(rules)} rule(s): {len(added)} added, {len(changed)} changed, {len(removed)} removed"
                + "".join(f"\n{what}: {', '.join(names)}" for what, names in
                          (("added", added), ("changed", changed), ("removed", removed)) if names))
        log.info("rules: %s", text.replace("\n", "; "))
        return True, text

    def _maybe_reload(self) -> None:
        try:
            asked = [i for (i,) in self.read_db.execute(
                "SELECT id FROM rule_reloads WHERE id > ? AND done IS NULL ORDER BY id", (self.reload_seen,))]
        except sqlite3.Error:
            asked = []
        if not asked and not self.reload_wanted.is_set():
            return
        self.reload_wanted.clear()
        ok, text = self.reload()
        self._flush([])  # what the swap resolved is stored before the answer
        if asked:
            self.reload_seen = asked[-1]
            try:
                self.writer.run_sync(lambda db: db.executemany(
                    "UPDATE rule_reloads SET done = ?, ok = ?, outcome = ? WHERE id = ?",
                    [(time.time(), int(ok), text[:20000], i) for i in asked]))
            except Exception:  # noqa: BLE001
                log.exception("rules: recording the reload outcome failed")

    def _flush(self, committed_at: list[float]) -> None:
        with self.lock:
            self._store_drained(committed_at)

    def _store_drained(self, committed_at: list[float]) -> None:
        """Queue what changed to the writer, in a transaction of its own. The caller holds
        the lock: draining and queueing together keep the stores of one alert in order
        whichever thread drains. Nobody waits for the store."""
        records = self.engine.drain()
        if not records:
            return
        rules, listeners = self.rules, list(self.listeners)

        def stored(error: BaseException | None) -> None:  # writer thread, after COMMIT
            if error is not None:  # retried by nothing: log loudly, keep evaluating
                self.stats["store_failures"] += 1
                log.error("rules: storing %d alert records failed", len(records), exc_info=error)
                return
            if committed_at:
                self.stats["lag_max"] = max(self.stats["lag_max"], time.monotonic() - min(committed_at))
            self.stats["records"] += len(records)
            if self.on_records is not None:
                try:
                    self.on_records(records)
                except Exception:  # noqa: BLE001
                    log.exception("rules: notification hand-off failed")

        self.writer.post(lambda db: alerts.apply(db, records, listeners, rules), then=stored)

