"""python -m bench storage [--days 365] [--interval 10]

One node at default settings for a simulated year: a metrics event every `interval`
seconds carrying the series the real metrics collector reports on this machine, through
the real path (wire encode -> frame decode -> JSON -> writer -> projections), with the
hub's rollup and retention run on the simulated clock as the hub runs them. Reports the
database size at the end. Baseline, same run: the size the raw samples alone would take
without rollups and retention (rows x measured bytes per row), i.e. Uptime Kuma's design.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from agent import wire
from agent.collectors.metrics import MetricsCollector
from agent.config import AGENT_OPTS
from agent.settings import load
from hub import rollup
from hub.config import load_settings
from hub.ingest import _json_of
from hub.store import Writer

DAY = 86400


def real_series() -> dict[str, float]:
    s = load(AGENT_OPTS, {"state_dir": Path(tempfile.gettempdir())}, None, env={})
    col = MetricsCollector(s, lambda e: True, None)
    col.sample()
    time.sleep(0.2)
    return col.sample()


def db_bytes(path: Path) -> int:
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if os.path.exists(p))


async def simulate(days: float, interval: float, work: Path) -> dict:
    settings = load_settings(data_dir=work)
    writer = Writer(work / "homelab.db")
    writer.start()
    await writer.run(lambda db: db.execute("INSERT INTO nodes (name, created) VALUES ('n1', 0)"))
    template = real_series()
    rng = random.Random(1)
    start = time.time() - days * DAY
    per_hour = int(3600 / interval)
    seq = 0
    t_wall = time.perf_counter()
    samples_total = 0
    for hour in range(int(days * 24)):
        events = []
        for k in range(per_hour):
            seq += 1
            ts = start + hour * 3600 + k * interval
            vals = {key: (v * (0.9 + 0.2 * rng.random()) if v else 0.0) for key, v in template.items()}
            events.append((seq, wire.encode_event(wire.Metrics(ts=ts, samples=vals))))
            samples_total += len(vals)
        frame = wire.decode_batch(wire.encode_batch("n1", start + hour * 3600, events))
        await writer.ingest("n1", frame, _json_of(frame), None)
        now = start + (hour + 1) * 3600
        while await writer.run(lambda db, now=now: rollup.tick(db, now, settings)):
            pass
    elapsed = time.perf_counter() - t_wall

    def finish(db):
        counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("events", "samples", "samples_1m", "samples_1h", "series")}
        return counts

    counts = await writer.run(finish)
    writer.stop()
    import sqlite3

    db = sqlite3.connect(work / "homelab.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # bytes per raw sample row, measured: what keeping every sample would cost
    raw_bytes_per_row = db.execute(
        "SELECT sum(pgsize) FROM dbstat WHERE name IN ('samples', 'samples_ts')"
    ).fetchone()[0] / max(counts["samples"], 1)
    db.close()
    size = db_bytes(work / "homelab.db")
    return {"size_bytes": size, "counts": counts, "series": len(template), "events": seq,
            "samples_total": samples_total, "raw_bytes_per_row": raw_bytes_per_row, "elapsed_s": elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench storage")
    ap.add_argument("--days", type=float, default=365)
    ap.add_argument("--interval", type=float, default=10.0, help="metrics interval (agent default 10s)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        r = asyncio.run(simulate(a.days, a.interval, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # The database after the simulated span (not extrapolated: retention windows make
    # growth non-linear). With --days < 365 this is the size at that age.
    mb = r["size_bytes"] / 1e6
    baseline_mb = r["samples_total"] * r["raw_bytes_per_row"] / 1e6
    print(json.dumps({
        "bench": "storage", "days": a.days, "interval_s": a.interval, "series": r["series"],
        "events": r["events"], "mb_per_node_year": round(mb, 1),
        "baseline_raw_mb_per_node_year": round(baseline_mb, 1),
        "ratio": round(mb / baseline_mb, 4) if baseline_mb else None,
        "rows": r["counts"], "elapsed_s": round(r["elapsed_s"], 1),
    }))


if __name__ == "__main__":
    main()
