"""The live rules engine: a thread between the writer's commits and the alerts table.

The writer hands each committed group to ``subscriber`` (a deque append: ingest never waits
for rules). A group with any kind other than the bulk ones wakes the thread, which then
evaluates everything handed over before it, in order; a group of bulk kinds only (metrics,
logs, commands, process lists: what an agent already holds up to ``ship_linger`` for company,
and what rules judge over windows and ``for:``) waits for the next tick instead of waking
it. The thread ticks once a second for ``for:``, windows, absence and twin queries, and
queues what changed to the writer as a job of its own (the alerts' transaction, one per
round) without waiting for it: the stores keep the order they were drained in, and the
thread goes on evaluating meanwhile. Twin queries run on their own read-only connection. A
reload (``homelab-hub rules reload`` or SIGHUP) swaps the whole rule set between two rounds.
"""

from __future__ import annotations

import collections
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from functools import partial

from agent.shipper import LINGER_KINDS
from hub.rules import alerts
from hub.rules.conditions import run_query
from hub.rules.engine import Engine
from hub.rules.loader import Rule
from hub.store import Committed, Writer, connect

log = logging.getLogger(__name__)
_WAKE = object()  # in the wake queue: an urgent commit is in the inbox

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
        # committed groups in commit order; the queue only wakes the thread (_WAKE, None: stop)
        self.inbox: collections.deque[tuple[float, list[Committed]]] = collections.deque()
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
        # the engine belongs to the rules thread; verdicts (asked from the writer thread by the
        # proposals worker) take this lock too. Never held while waiting for the writer.
        self.lock = threading.Lock()

    def verdict(self, alert_id: int, since: float, now: float) -> tuple[str, float | None]:
        with self.lock:
            return self.engine.verdict(alert_id, since, now)

    def subscriber(self, committed: list[Committed]) -> None:
        """Called by the writer after each commit: hand over and return at once. Only a group
        with an urgent kind wakes the thread: at 500 nodes waking it for every commit (a
        thread switch and a turn for the GIL) cost more than evaluating the events."""
        self.inbox.append((time.monotonic(), committed))
        if any(c.kind not in LINGER_KINDS for c in committed):
            self.queue.put(_WAKE)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.queue.put(None)
        self._thread.join(timeout)
        self.read_db.close()

    def _run(self) -> None:
        next_tick = 0.0
        inbox = self.inbox
        while not self._stop.is_set():
            if not inbox:
                wait = max(0.0, next_tick - time.monotonic())
                try:
                    token = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
                except queue.Empty:
                    token = _WAKE  # the tick: what bulk groups came meanwhile is taken below
                if token is None:
                    break
            while True:  # the wakes of what is taken below are moot
                try:
                    if self.queue.get_nowait() is None:
                        self._stop.set()
                except queue.Empty:
                    break
            committed_at = []
            n = 0
            while inbox and n <= 20_000:
                t0, batch = inbox.popleft()
                committed_at.append(t0)
                # event time drives windows (a backlog replays at its own pace), but a node
                # whose clock runs ahead must not push alerts into the future
                now = self.clock()
                with self.lock:
                    for c in batch:
                        try:
                            self.engine.feed(c.node, c.id, c.event, c.ts if c.ts <= now else now)
                        except Exception:  # noqa: BLE001 - a bad event must not stop evaluation
                            log.exception("rules: evaluating event %s failed", c.id)
                n += len(batch)
            self.stats["events"] += n
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
        """Queue what changed to the writer without waiting for the store (a wait is two
        thread switches, and at 500 nodes a quarter of the commits change an alert).
        Draining and queueing under the lock keep one alert's stores in order; ``stats``
        and ``on_records`` follow the COMMIT, in the writer thread."""
        with self.lock:
            records = self.engine.drain()
            if records:
                self.writer.post(partial(alerts.apply, records=records, listeners=list(self.listeners),
                                         rules=self.rules), then=partial(self._stored, records, committed_at))

    def _stored(self, records: list[dict], committed_at: list[float], error: BaseException | None) -> None:
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
