"""Metric rollups and retention, done in bounded steps inside the writer.

Raw samples -> 1-minute aggregates -> 1-hour aggregates, and 1-minute -> 10-minute aggregates
kept two days for the fleet dashboard's day of 10-minute points. Each target keeps a watermark
in ``rollup_state``: buckets before it are final. Late samples (a laptop back from
suspend with a backlog) lower the watermark in the same transaction that stores them
(see ``lower_watermark``), so their buckets are recomputed. Raw rows are deleted only
after they are rolled up and older than their retention, so nothing is lost to a race.
"""

from __future__ import annotations

import sqlite3

STEP_1M = 6 * 3600  # at most this much raw time aggregated per tick
STEP_1H = 7 * 86400
STEP_10M = 86400
KEEP_10M = 2 * 86400  # the dashboard draws the last 24 hours
DELETE_CHUNK = 20_000
SETTLE = 120  # seconds a minute bucket stays open for stragglers


def _get(db: sqlite3.Connection, target: str) -> int | None:
    row = db.execute("SELECT done FROM rollup_state WHERE target = ?", (target,)).fetchone()
    return row[0] if row else None


def _set(db: sqlite3.Connection, target: str, done: int) -> None:
    db.execute(
        "INSERT INTO rollup_state (target, done) VALUES (?, ?)"
        " ON CONFLICT (target) DO UPDATE SET done = excluded.done",
        (target, done),
    )


def lower_watermark(db: sqlite3.Connection, min_ts: int) -> None:
    """Called by ingest when it stored samples older than the 1-minute watermark."""
    db.execute(
        "UPDATE rollup_state SET done = ? WHERE target = 'samples_1m' AND done > ?",
        (min_ts // 60 * 60, min_ts),
    )


def _aggregate(db, source, target, width, start, end, weighted):
    if weighted:
        cols = "sum(avg * n) / sum(n), min(min), max(max), sum(n)"
    else:
        cols = "avg(value), min(value), max(value), count(*)"
    # Series by series along the (series, ts) key: the tables carry no ts index (m005).
    db.execute(
        f"INSERT OR REPLACE INTO {target} (series, ts, avg, min, max, n)"
        f" SELECT p.series, p.ts / {width} * {width} AS b, {cols}"
        f" FROM series s CROSS JOIN {source} p ON p.series = s.id AND p.ts >= ? AND p.ts < ?"
        f" GROUP BY p.series, b",
        (start, end),
    )


def _oldest(db, table) -> int | None:
    """min(ts) by one key seek per series (a bare min(ts) would read the whole table)."""
    return db.execute(
        f"SELECT min((SELECT min(ts) FROM {table} WHERE series = s.id)) FROM series s"
    ).fetchone()[0]


def _roll(db, source, target, width, step, now_bucket_end, weighted, since: int = 0) -> bool:
    done = _get(db, target)
    if done is None:  # a new target starts at the oldest source row it keeps
        first = _oldest(db, source)
        if first is None:
            return False
        done = max(first, since) // width * width
    end = min(now_bucket_end, done + step) // width * width
    if end <= done:
        _set(db, target, done)
        return False
    _aggregate(db, source, target, width, done, end, weighted)
    _set(db, target, end)
    if target == "samples_1m":  # the hours and 10 minutes these minutes fall into are recomputed
        db.execute(
            "UPDATE rollup_state SET done = ? WHERE target = 'samples_1h' AND done > ?",
            (done // 3600 * 3600, done),
        )
        db.execute(
            "UPDATE rollup_state SET done = ? WHERE target = 'samples_10m' AND done > ?",
            (done // 600 * 600, done),
        )
    return end < now_bucket_end // width * width


def _delete_before(db, table, cutoff) -> bool:
    """Delete up to DELETE_CHUNK rows with ts < cutoff; True if more remain. The rows are
    found series by series along the primary key, which is why no ts index is needed."""
    cur = db.execute(
        f"DELETE FROM {table} WHERE (series, ts) IN (SELECT p.series, p.ts FROM series s"
        f" CROSS JOIN {table} p ON p.series = s.id AND p.ts < ? LIMIT ?)",
        (cutoff, DELETE_CHUNK),
    )
    return cur.rowcount == DELETE_CHUNK


def _delete_events(db, where: str, args: tuple) -> bool:
    ids = db.execute(f"SELECT id FROM events WHERE {where} LIMIT ?", (*args, DELETE_CHUNK)).fetchall()
    if not ids:
        return False
    db.executemany("DELETE FROM events WHERE id = ?", ids)
    return len(ids) == DELETE_CHUNK


def _slim_metrics_events(db, cutoff: float) -> bool:
    """Drop `samples` from the JSON of metrics events older than cutoff, in bounded steps.
    A metrics event is its samples again as JSON, the largest table of a node-year; the
    samples table holds the same values. The rows stay (counts, times, sequence numbers: every
    stored query answers as before) until raw_retention. Late events below the watermark
    keep their samples until they expire."""
    done = _get(db, "metrics_events_slim") or 0
    hi = int(cutoff)
    if hi <= done:
        return False
    row = db.execute(
        "SELECT ts FROM events WHERE kind = 'metrics' AND ts >= ? AND ts < ? ORDER BY ts LIMIT 1 OFFSET ?",
        (done, hi, DELETE_CHUNK),
    ).fetchone()
    if row is not None:
        hi = max(int(row[0]), done + 1)
    rows = db.execute(
        "SELECT id, node, seq, ts, kind, json_remove(data, '$.samples') FROM events"
        " WHERE kind = 'metrics' AND ts >= ? AND ts < ?", (done, hi)).fetchall()
    # Delete and insert, not UPDATE: a row shrunk in place leaves its page nearly empty for
    # good, while a delete merges underfull pages (the events table only appends).
    db.executemany("DELETE FROM events WHERE id = ?", [(r[0],) for r in rows])
    db.executemany("INSERT INTO events (id, node, seq, ts, kind, data) VALUES (?, ?, ?, ?, ?, ?)", rows)
    _set(db, "metrics_events_slim", hi)
    return hi < int(cutoff)


def _expire_events(db, cutoff: float) -> bool:
    """Oldest events by id (ids follow arrival, so this walks the rowid, not a ts scan)."""
    first = db.execute("SELECT min(id) FROM events").fetchone()[0]
    if first is None:
        return False
    cur = db.execute(
        "DELETE FROM events WHERE id < ? AND ts < ?", (first + DELETE_CHUNK, cutoff)
    )
    return cur.rowcount > 0


# Histories derived from events expire with them (event_retention). Current-state tables
# (packages, services, devices, files, ...) never expire: they are what the nodes are now.
HISTORY_TABLES = ("logs", "commands", "file_changes", "package_changes", "service_changes", "device_changes")


def expire_history(db: sqlite3.Connection, cutoff: float, chunk: int = DELETE_CHUNK) -> bool:
    """Delete up to `chunk` rows older than cutoff from each history table (full-text indexes
    follow by trigger). True when more are waiting. A watched file's content at the cutoff is
    kept first (the Ansible export rebuilds files from their history)."""
    from hub.ansible import fold_file_history

    if db.execute("SELECT 1 FROM file_changes WHERE ts < ? LIMIT 1", (cutoff,)).fetchone():
        fold_file_history(db, cutoff)
    more = False
    for table in HISTORY_TABLES:
        cur = db.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE ts < ? ORDER BY ts LIMIT ?)",
            (cutoff, chunk),
        )
        more |= cur.rowcount == chunk
    return more


def tick(db: sqlite3.Connection, now: float, settings) -> bool:
    """One bounded step of rollup and retention. Returns True when more work is waiting."""
    more = _roll(db, "samples", "samples_1m", 60, STEP_1M, int(now) - SETTLE, weighted=False)
    more |= _roll(db, "samples_1m", "samples_1h", 3600, STEP_1H, _get(db, "samples_1m") or 0, weighted=True)
    more |= _roll(db, "samples_1m", "samples_10m", 600, STEP_10M, _get(db, "samples_1m") or 0, weighted=True,
                  since=int(now - KEEP_10M))
    done_1m = _get(db, "samples_1m") or 0
    done_1h = _get(db, "samples_1h") or 0
    more |= _delete_before(db, "samples", min(int(now - settings.raw_retention), done_1m))
    more |= _delete_before(db, "samples_1m", min(int(now - settings.minute_retention), done_1h))
    more |= _delete_before(db, "samples_1h", int(now - settings.hour_retention))
    more |= _delete_before(db, "samples_10m", int(now - KEEP_10M))
    more |= _slim_metrics_events(db, now - min(settings.metrics_event_retention, settings.raw_retention))
    more |= _delete_events(db, "kind = 'metrics' AND ts < ?", (now - settings.raw_retention,))
    more |= _delete_events(db, "kind IN ('processes') AND ts < ?", (now - settings.raw_retention,))
    more |= _expire_events(db, now - settings.event_retention)
    more |= expire_history(db, now - settings.event_retention)
    db.execute("DELETE FROM ingest_errors WHERE ts < ?", (now - 7 * 86400,))
    if not more:
        db.execute("PRAGMA incremental_vacuum(2000)")
        analyze(db, now)
    return more


_last_analyze = 0.0


def analyze(db: sqlite3.Connection, now: float, every: float = 3600) -> None:
    """Planner statistics, sampled (analysis_limit keeps it to milliseconds on a large file).
    With them SQLite skip-scans events(kind, ts) for a time range instead of reading every row,
    and joins series before samples."""
    global _last_analyze
    if now - _last_analyze < every:
        return
    _last_analyze = now
    db.execute("PRAGMA analysis_limit = 1000")
    db.execute("ANALYZE")
