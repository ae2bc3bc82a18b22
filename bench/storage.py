"""python -m bench storage [--days 365] [--interval 10] [--logs 0]

One node at default settings for a simulated year: a metrics event every `interval`
seconds carrying the series the real metrics collector reports on this machine, through
the real path (wire encode -> frame decode -> JSON -> writer -> projections), with the
hub's rollup and retention run on the simulated clock as the hub runs them. Reports the
database size at the end. Baseline, same run: the size the raw samples alone would take
without rollups and retention (rows x measured bytes per row), i.e. Uptime Kuma's design.

--logs N adds N syslog-like lines a day (bench queries sends ~4,800), kept for
event_retention (90 days) as the hub keeps them; --quick sends only the lines retention keeps.
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
    # mounts under /tmp are other test runs' scratch file systems, not this node's disks
    return {k: v for k, v in col.sample().items() if 'mount="/tmp/' not in k}


def db_bytes(path: Path) -> int:
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if os.path.exists(p))


PROGRAMS = ["sshd", "cron", "kernel", "nginx", "systemd", "dockerd", "smartd"]


def log_lines(rng: random.Random, t: float, n: int) -> list[wire.Log]:
    out = []
    for _ in range(n):
        prog = rng.choice(PROGRAMS)
        out.append(wire.Log(
            ts=t + rng.random() * 3600, source="journald", program=prog, pid=rng.randint(100, 9999),
            severity=rng.choice([3, 4, 6, 6, 6]), unit=f"{prog}.service",
            message=f"{prog} worker {rng.randint(1, 50)} handled request from 10.0.0.{rng.randint(1, 254)}"
                    f" in {rng.randint(1, 500)} ms"))
    return out


async def simulate(days: float, interval: float, work: Path, quick: bool = False, logs_per_day: int = 0) -> dict:
    settings = load_settings(data_dir=work)
    writer = Writer(work / "homelab.db")
    writer.start()
    await writer.run(lambda db: db.execute("INSERT INTO nodes (name, created) VALUES ('n1', 0)"))
    template = real_series()
    rng = random.Random(1)
    start = time.time() - days * DAY
    # --quick: an hour that ends as 1-minute rows needs a sample every 30 s, not 10 s (the
    # same rows); one that ends as a 1-hour row needs one every 15 minutes. Same rows, but a
    # year of rolling deletes and inserts leaves the full run's pages less full: measured, the
    # quick size is ~12% low and its ratio to the raw baseline ~5% low.
    raw_from = days * DAY - settings.raw_retention - 3600
    minute_from = raw_from - settings.minute_retention - 3600
    logs_from = days * DAY - settings.event_retention - DAY
    seq = 0
    n_logs = 0
    t_wall = time.perf_counter()
    samples_total = 0
    events: list = []
    for hour in range(int(days * 24)):
        sparse = quick and (hour + 1) * 3600 < minute_from
        step = interval if not quick or hour * 3600 >= raw_from else 900.0 if sparse else 30.0
        for k in range(int(3600 / step)):
            seq += 1
            ts = start + hour * 3600 + k * step
            vals = {key: (v * (0.9 + 0.2 * rng.random()) if v else 0.0) for key, v in template.items()}
            events.append((seq, wire.encode_event(wire.Metrics(ts=ts, samples=vals))))
            samples_total += len(vals) * int(step / interval)  # what a real node sends
        if logs_per_day and (not quick or hour * 3600 >= logs_from):
            k = logs_per_day // 24 + (1 if rng.random() < logs_per_day % 24 / 24 else 0)
            for line in log_lines(rng, start + hour * 3600, k):
                seq += 1
                events.append((seq, wire.encode_event(line)))
            n_logs += k
        if sparse and (hour + 1) % 24:
            continue  # and a day per batch and per rollup round: the same rows, fewer commits
        frame = wire.decode_batch(wire.encode_batch("n1", start + hour * 3600, events))
        await writer.ingest("n1", frame, _json_of(frame), None)
        events = []
        now = start + (hour + 1) * 3600
        while await writer.run(lambda db, now=now: rollup.tick(db, now, settings)):
            pass
    elapsed = time.perf_counter() - t_wall

    def finish(db):
        have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("events", "samples", "samples_1m", "samples_10m", "samples_1h", "series", "logs")
                if t in have}

    counts = await writer.run(finish)
    writer.stop()
    import sqlite3

    db = sqlite3.connect(work / "homelab.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # bytes per raw sample row, measured: what keeping every sample would cost
    raw_bytes_per_row = db.execute(
        "SELECT sum(pgsize) FROM dbstat WHERE name IN ('samples', 'samples_ts')"
    ).fetchone()[0] / max(counts["samples"], 1)
    tables = {name: round(b / 1e6, 2) for name, b in db.execute(
        "SELECT name, sum(pgsize) FROM dbstat GROUP BY name HAVING sum(pgsize) > 50000 ORDER BY 2 DESC")}
    db.close()
    size = db_bytes(work / "homelab.db")
    return {"size_bytes": size, "counts": counts, "series": len(template), "events": seq,
            "samples_total": samples_total, "log_lines_sent": n_logs, "raw_bytes_per_row": raw_bytes_per_row, "elapsed_s": elapsed, "tables_mb": tables}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench storage")
    ap.add_argument("--days", type=float, default=365)
    ap.add_argument("--interval", type=float, default=10.0, help="metrics interval (agent default 10s)")
    ap.add_argument("--quick", action="store_true",
                    help="send hours that end as aggregates sparsely: ~1 minute; the ratio within ~5%% of a full run, "
                         "the absolute size ~12%% low (fuller B-tree pages; docs/performance.md)")
    ap.add_argument("--logs", type=int, default=0, help="log lines a day (default 0: metrics only)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        r = asyncio.run(simulate(a.days, a.interval, work, a.quick, a.logs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # The database after the simulated span (not extrapolated: retention windows make
    # growth non-linear). With --days < 365 this is the size at that age.
    mb = r["size_bytes"] / 1e6
    baseline_mb = r["samples_total"] * r["raw_bytes_per_row"] / 1e6
    print(json.dumps({
        "bench": "storage", "quick": a.quick, "days": a.days, "interval_s": a.interval, "series": r["series"],
        "logs_per_day": a.logs, "log_lines_sent": r["log_lines_sent"],
        "mb_per_series_year": round(mb / r["series"], 3),
        "events": r["events"], "mb_per_node_year": round(mb, 1),
        "baseline_raw_mb_per_node_year": round(baseline_mb, 1),
        "ratio": round(mb / baseline_mb, 4) if baseline_mb else None,
        "rows": r["counts"], "tables_mb": r["tables_mb"], "elapsed_s": round(r["elapsed_s"], 1),
    }))


if __name__ == "__main__":
    main()
