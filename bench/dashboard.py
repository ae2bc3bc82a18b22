"""python -m bench dashboard [--nodes 10] [--days 30] [--quick]

Builds a hub database holding `days` of metrics from `nodes` through the real ingest path
(wire frames -> decode -> writer -> projections; rollups and retention on the simulated clock,
as bench/queries.py does), starts `homelab-hub serve` on it, and times the dashboard's data
endpoint for one node's 30-day view over HTTP (median of --reps).

Baseline in the same run: the raw SQL reading the same rows the endpoint reads (that node's
series from the hourly tier over 30 days, plus the not-yet-rolled-up tail from the finer tiers)
on a plain sqlite3 connection, without bucketing, JSON or HTTP. Target: <= 100 ms.

Metrics are sent every `--step` seconds (60 by default: exactly the 1-minute rows a 10 s node
leaves once its raw samples expire) and every 10 s for the last day. --quick sends the old
days every 5 minutes and the last day every minute: the hourly tier that the 30-day view reads
has the same rows, the database is five times smaller and builds in a fraction of the time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from agent import wire
from bench.common import Hub
from hub import rollup
from hub.config import load_settings
from hub.ingest import _json_of
from hub.store import Writer

DAY = 86400


def samples(rng: random.Random, node: int, ts: float) -> dict[str, float]:
    return {
        "cpu_percent": rng.random() * 60, "memory_used_ratio": 0.3 + rng.random() * 0.4,
        "swap_used_ratio": rng.random() * 0.1, "load1": rng.random() * 3, "load5": rng.random() * 2,
        "load15": rng.random(), 'disk_used_ratio{mount="/"}': 0.5 + node * 0.04,
        'disk_used_ratio{mount="/srv"}': 0.3 + rng.random() * 0.01,
        'net_receive_bytes_per_second{iface="eth0"}': rng.random() * 1e6,
        'net_transmit_bytes_per_second{iface="eth0"}': rng.random() * 1e5,
        "disk_read_bytes_per_second": rng.random() * 1e6, "disk_write_bytes_per_second": rng.random() * 1e6,
        'temperature_celsius{chip="coretemp",sensor="Package id 0"}': 40 + rng.random() * 10,
    }


async def build(nodes: int, days: float, step: int, last_step: int, work: Path) -> dict:
    settings = load_settings(data_dir=work)
    writer = Writer(work / "homelab.db")
    writer.start()
    names = [f"node{i:02d}" for i in range(nodes)]

    def add_nodes(db):
        for n in names:
            db.execute("INSERT INTO nodes (name, created, last_seen, last_seq) VALUES (?, ?, ?, 0)",
                       (n, time.time(), time.time()))

    await writer.run(add_nodes)
    now = time.time()
    rngs = [random.Random(i) for i in range(nodes)]
    seqs = [0] * nodes
    n_events, started = 0, time.perf_counter()
    t = now - days * DAY
    while t < now:  # an hour at a time for every node, then one bounded rollup step
        for i, name in enumerate(names):
            evs = []
            k = t
            while k < min(t + 3600, now):
                seqs[i] += 1
                evs.append((seqs[i], wire.encode_event(wire.Metrics(ts=k, samples=samples(rngs[i], i, k)))))
                k += last_step if k >= now - DAY else step
            if rngs[i].random() < 0.05:
                seqs[i] += 1
                evs.append((seqs[i], wire.encode_event(wire.Package(
                    ts=t + 1, action="upgrade", manager="dpkg", name=f"pkg{rngs[i].randint(1, 300)}",
                    version="1.2-1", old_version="1.1-1"))))
            frame = wire.decode_batch(wire.encode_batch(name, t, evs))
            await writer.ingest(name, frame, _json_of(frame), None)
            n_events += len(evs)
        t += 3600
        sim_now = min(t, now)
        while await writer.run(lambda db, s=sim_now: rollup.tick(db, s, settings)):
            pass
    writer.stop()
    return {"events": n_events, "build_s": time.perf_counter() - started}


def raw_sql(path: Path, node: str, start: float, end: float) -> float:
    """The rows behind the 30-day view, read as plainly as SQLite can: the baseline."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        t = time.perf_counter()
        marks = dict(db.execute("SELECT target, done FROM rollup_state"))
        ids = [r[0] for r in db.execute("SELECT id FROM series WHERE node = ?", (node,))]
        q = ",".join("?" * len(ids))
        h, m = marks.get("samples_1h", 0), marks.get("samples_1m", 0)
        n = len(db.execute(f"SELECT series, ts, avg FROM samples_1h WHERE series IN ({q}) AND ts >= ? AND ts < ?",
                           (*ids, start, h)).fetchall())
        n += len(db.execute(f"SELECT series, ts, avg FROM samples_1m WHERE series IN ({q}) AND ts >= ? AND ts < ?",
                            (*ids, max(start, h), m)).fetchall())
        n += len(db.execute(f"SELECT series, ts, value FROM samples WHERE series IN ({q}) AND ts >= ? AND ts <= ?",
                            (*ids, max(start, m), end)).fetchall())
        ms = (time.perf_counter() - t) * 1000
        assert n > 0, "no rows: the build did not roll up"
        return ms
    finally:
        db.close()


def timed_get(url: str) -> tuple[float, int]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
    return (time.perf_counter() - t) * 1000, len(body)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench dashboard")
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="old days every 5 min, the last day every minute")
    a = ap.parse_args()
    step, last_step = (300, 60) if a.quick else (60, 10)
    os.environ["HOMELAB_MODEL"] = "none"  # the hub's brain is not what is measured
    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    hub = None
    try:
        b = asyncio.run(build(a.nodes, a.days, step, last_step, work))
        hub = Hub(work).start()
        node = f"node{a.nodes // 2:02d}"
        url = f"{hub.url}/dashboard/api/nodes/{node}/series?range=30d"
        timed_get(url)  # warm: the page cache, the hub's read connection
        runs = [timed_get(url) for _ in range(a.reps)]
        ms = statistics.median(r[0] for r in runs)
        with urllib.request.urlopen(url, timeout=60) as r:
            data = json.load(r)
        now = time.time()
        raw_sql(work / "homelab.db", node, now - 30 * DAY, now)
        base = statistics.median(raw_sql(work / "homelab.db", node, now - 30 * DAY, now) for _ in range(a.reps))
        size = (work / "homelab.db").stat().st_size
    finally:
        if hub:
            hub.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "bench": "dashboard", "nodes": a.nodes, "days": a.days, "quick": a.quick, "events": b["events"],
        "db_mb": round(size / 1e6, 1), "build_s": round(b["build_s"], 1),
        "series_30d_ms": round(ms, 1), "raw_sql_ms": round(base, 2), "ratio": round(ms / base, 1),
        "target_ms": 100, "ok": ms <= 100, "tier": data["tier"], "points": len(data["ts"]),
        "lines": sum(len(c["lines"]) for c in data["charts"]), "bytes": runs[0][1],
    }))


if __name__ == "__main__":
    main()
