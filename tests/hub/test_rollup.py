"""Rollups and retention on a real database: aggregates against values computed here, raw
rows deleted only after their window, late samples recomputed, and no ts index needed."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from agent import wire
from hub import rollup
from hub.config import load_settings
from hub.ingest import _json_of
from hub.store import IngestItem, Writer

T0 = 1_700_000_000 // 3600 * 3600  # an hour boundary


def _frame(node, seq0, samples):
    evs = [(seq0 + i, wire.encode_event(wire.Metrics(ts=ts, samples=s))) for i, (ts, s) in enumerate(samples)]
    return wire.decode_batch(wire.encode_batch(node, samples[-1][0], evs))


def _ingest(w, node, seq0, samples):
    frame = _frame(node, seq0, samples)
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()
        w.queue.put(IngestItem(node, frame, _json_of(frame), 0.0, None, fut, loop))
        return loop.run_until_complete(fut)
    finally:
        loop.close()


def _tick_all(w, now, settings):
    for _ in range(1000):
        if not w.run_sync(lambda db: rollup.tick(db, now, settings)):
            return
    raise AssertionError("rollup never settled")


def test_rollups_match_and_retention_deletes(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    w = Writer(tmp_path / "homelab.db")
    w.start()
    try:
        w.run_sync(lambda db: db.executemany("INSERT INTO nodes (name, created) VALUES (?, 0)", [("a",), ("b",)]))
        indexes = {r[0] for r in w.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert not {"samples_ts", "samples_1m_ts", "samples_1h_ts"} & indexes
        expect_1m: dict = defaultdict(list)
        seq = {"a": 0, "b": 0}
        for node, scale in (("a", 1.0), ("b", 10.0)):
            batch = []
            for k in range(0, 3 * 3600, 10):  # three hours at 10 s
                ts = T0 + k
                v = scale * ((k // 10) % 17)
                batch.append((ts, {"cpu": v, 'disk{mount="/"}': v / 2}))
                expect_1m[(node, "cpu", ts // 60 * 60)].append(v)
            _ingest(w, node, seq[node] + 1, batch)
            seq[node] += len(batch)
        now = T0 + 3 * 3600 + 600
        _tick_all(w, now, settings)
        # metrics events lose their samples from `data` after an hour (the samples table has
        # them); the rows stay, so counts and times answer as before
        cut = now - settings.metrics_event_retention
        ev = dict(w.db.execute("SELECT ts < ?, count(*) FROM events WHERE kind = 'metrics'"
                               " AND json_extract(data, '$.samples') IS NOT NULL GROUP BY 1", (cut,)).fetchall())
        assert ev == {0: 2 * (3 * 360 - int(cut - T0) // 10)}
        assert w.db.execute("SELECT count(*) FROM events WHERE kind = 'metrics'").fetchone()[0] == 2 * 3 * 360
        assert w.db.execute("SELECT data FROM events WHERE kind = 'metrics' ORDER BY id LIMIT 1").fetchone()[0] \
            == f'{{"kind":"metrics","ts":{float(T0)}}}'
        assert w.db.execute("SELECT count(*) FROM samples").fetchone()[0] == 2 * 2 * 3 * 360
        got = {(r[0], r[1], r[2]): (r[3], r[4], r[5], r[6]) for r in w.db.execute(
            "SELECT s.node, s.key, p.ts, p.avg, p.min, p.max, p.n FROM samples_1m p JOIN series s ON s.id = p.series")}
        for (node, key, b), vals in expect_1m.items():
            avg, mn, mx, n = got[(node, key, b)]
            assert (mn, mx, n) == (min(vals), max(vals), len(vals))
            assert abs(avg - sum(vals) / len(vals)) < 1e-9
        hours = {(r[0], r[1]): (r[2], r[3]) for r in w.db.execute(
            "SELECT s.node, p.ts, p.n, p.max FROM samples_1h p JOIN series s ON s.id = p.series WHERE s.key = 'cpu'")}
        assert hours[("a", T0)] == (360, 16.0) and hours[("b", T0 + 3600)] == (360, 160.0)
        # 10-minute rows (the fleet dashboard's points) against the raw values of their window
        tens = {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in w.db.execute(
            "SELECT s.node, p.ts, p.avg, p.min, p.max, p.n FROM samples_10m p JOIN series s ON s.id = p.series"
            " WHERE s.key = 'cpu'")}
        assert len(tens) == 2 * 3 * 6  # every whole 10 minutes of three hours, both nodes
        for (node, b), (avg, mn, mx, n) in tens.items():
            vals = [v for m in range(b, b + 600, 60) for v in expect_1m[(node, "cpu", m)]]
            assert (mn, mx, n) == (min(vals), max(vals), len(vals))
            assert abs(avg - sum(vals) / len(vals)) < 1e-9

        # a late sample from node a lowers the watermark; its minute is recomputed
        _ingest(w, "a", seq["a"] + 1, [(T0 + 5, {"cpu": 1000.0})])
        _tick_all(w, now, settings)
        row = w.db.execute(
            "SELECT p.max, p.n FROM samples_1m p JOIN series s ON s.id = p.series"
            " WHERE s.node = 'a' AND s.key = 'cpu' AND p.ts = ?", (T0,)).fetchone()
        assert tuple(row) == (1000.0, 7)  # six at 10 s plus the straggler at +5 s
        row = w.db.execute(
            "SELECT p.max, p.n FROM samples_10m p JOIN series s ON s.id = p.series"
            " WHERE s.node = 'a' AND s.key = 'cpu' AND p.ts = ?", (T0,)).fetchone()
        assert tuple(row) == (1000.0, 61)  # and its 10 minutes

        # a day later the raw rows go (they are rolled up), the aggregates stay
        later = now + settings.raw_retention + 3600
        _tick_all(w, later, settings)
        assert w.db.execute("SELECT count(*) FROM samples").fetchone()[0] == 0
        assert w.db.execute("SELECT count(*) FROM samples_1m").fetchone()[0] == 2 * 2 * 180
        assert w.db.execute("SELECT count(*) FROM events WHERE kind = 'metrics'").fetchone()[0] == 0
        assert w.db.execute("SELECT count(*) FROM samples_10m").fetchone()[0] == 2 * 2 * 18  # kept two days

        # retention is bounded per step and still finishes
        old = rollup.DELETE_CHUNK
        rollup.DELETE_CHUNK = 50
        try:
            steps = 0
            while w.run_sync(lambda db: rollup.tick(db, later + settings.minute_retention + 86400, settings)):
                steps += 1
            assert steps >= 2 * 2 * 180 // 50 - 1
        finally:
            rollup.DELETE_CHUNK = old
        assert w.db.execute("SELECT count(*) FROM samples_1m").fetchone()[0] == 0
        assert w.db.execute("SELECT count(*) FROM samples_1h").fetchone()[0] == 2 * 2 * 3
    finally:
        w.stop()
