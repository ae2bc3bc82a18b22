"""python -m bench queries [--nodes 10] [--days 30]

Builds a hub database holding `days` of `nodes` synthetically through the real ingest path
(wire frames -> decode -> writer -> projections, rollups and retention on the simulated
clock), then times every stored query of datasette/metadata.yml plus the dashboard and
search pages over HTTP against a real Datasette. Baseline in the same run: the same
Datasette answering `select 1` (its own floor). Reports max_ms (slowest page, median of 5).

Metrics older than the raw window are sent once a minute instead of every 10 s: those
raw samples are deleted by retention anyway, and the 1-minute rollups they leave behind
have exactly the rows a 10 s node leaves. The last day is sent at the default 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from agent import wire
from bench.common import free_port
from hub import rollup
from hub.config import load_settings
from hub.ingest import _json_of
from hub.paths import shipped
from hub.store import Writer

DAY = 86400
PROGRAMS = ["sshd", "cron", "kernel", "nginx", "systemd", "dockerd", "smartd"]


def node_events(rng: random.Random, node: int, t0: float, t1: float, raw_from: float):
    """Yield (ts, event) for one node between t0 and t1 in time order, hour by hour."""
    t = t0
    while t < t1:
        hour = []
        step = 10 if t >= raw_from else 60
        for k in range(0, 3600, step):
            ts = t + k
            hour.append((ts, wire.Metrics(ts=ts, samples={
                "cpu_percent": rng.random() * 60, "memory_used_ratio": 0.3 + rng.random() * 0.4,
                "load1": rng.random() * 3, "load5": rng.random() * 2, "swap_used_ratio": rng.random() * 0.1,
                'disk_used_ratio{mount="/"}': 0.5 + node * 0.04 + (ts - t0) / (t1 - t0) * 0.1,
                'disk_used_ratio{mount="/srv"}': 0.3 + rng.random() * 0.01,
                'net_receive_bytes_per_second{iface="eth0"}': rng.random() * 1e6,
                'net_transmit_bytes_per_second{iface="eth0"}': rng.random() * 1e5})))
        for _ in range(200):  # ~4,800 log lines a day
            ts = t + rng.random() * 3600
            prog = rng.choice(PROGRAMS)
            hour.append((ts, wire.Log(ts=ts, source="/var/log/syslog", program=prog, pid=rng.randint(100, 9999),
                                      severity=rng.choice([3, 4, 6, 6, 6]),
                                      message=f"{prog} worker {rng.randint(1, 50)} handled request from 10.0.0.{rng.randint(1, 254)} in {rng.randint(1, 500)} ms")))
        for _ in range(8):
            ts = t + rng.random() * 3600
            hour.append((ts, wire.Command(ts=ts, command=rng.choice(["systemctl status nginx", "df -h", "vim /etc/nginx/nginx.conf",
                                                                     "docker compose up -d", "journalctl -u sshd", "apt list --upgradable"]),
                                          cwd="/root", user=rng.choice(["root", "alice"]), exit_code=0, duration_ms=rng.randint(1, 900))))
        if rng.random() < 0.2:
            ts = t + rng.random() * 3600
            hour.append((ts, wire.FileChange(ts=ts, action="modify", path=f"/etc/app/conf{rng.randint(1, 30)}.ini", size=100,
                                             mode=0o644, uid=0, gid=0, sha256=f"{rng.getrandbits(256):064x}", content_changed=True,
                                             diff="-a=1\n+a=2\n")))
        if rng.random() < 0.05:
            ts = t + rng.random() * 3600
            hour.append((ts, wire.Package(ts=ts, action=rng.choice(["install", "upgrade", "remove"]), manager="dpkg",
                                          name=f"pkg{rng.randint(1, 300)}", version="1.2-1", old_version="1.1-1")))
        if rng.random() < 0.03:
            ts = t + rng.random() * 3600
            hour.append((ts, wire.Service(ts=ts, unit=f"svc{rng.randint(1, 20)}.service", active=rng.choice(["failed", "active"]),
                                          previous="active", result="exit-code", restarts=rng.randint(0, 4))))
        if rng.random() < 0.01:
            ts = t + rng.random() * 3600
            hour.append((ts, wire.Device(ts=ts, action="add", subsystem="block", sys_path=f"/devices/usb/{rng.randint(1, 9)}/sdb",
                                         dev_node="/dev/sdb", vendor="SanDisk", model="Cruzer", bus="usb", source="kernel")))
        hour.sort(key=lambda x: x[0])
        yield t, hour
        t += 3600


async def build(nodes: int, days: float, work: Path) -> dict:
    settings = load_settings(data_dir=work)
    writer = Writer(work / "homelab.db")
    writer.start()
    names = [f"node{i:02d}" for i in range(nodes)]

    def add_nodes(db):
        for n in names:
            db.execute("INSERT INTO nodes (name, created, last_seen, last_seq) VALUES (?, ?, ?, 0)", (n, time.time(), time.time()))

    await writer.run(add_nodes)
    now = time.time()
    t0, raw_from = now - days * DAY, now - DAY
    gens = [node_events(random.Random(i), i, t0, now, raw_from) for i in range(nodes)]
    seqs = [0] * nodes
    n_events = 0
    started = time.perf_counter()
    for hours in zip(*gens, strict=True):
        for i, (t, hour) in enumerate(hours):
            evs = []
            for _, e in hour:
                seqs[i] += 1
                evs.append((seqs[i], wire.encode_event(e)))
            frame = wire.decode_batch(wire.encode_batch(names[i], t, evs))
            await writer.ingest(names[i], frame, _json_of(frame), None)
            n_events += len(evs)
        sim_now = hours[0][0] + 3600
        while await writer.run(lambda db, s=sim_now: rollup.tick(db, s, settings)):
            pass
    writer.stop()
    return {"events": n_events, "build_s": time.perf_counter() - started}


def timed_get(url: str) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status}")
    return (time.perf_counter() - t) * 1000


def params_for(sql: str) -> dict:
    defaults = {"node": "node03", "since": "", "name": "cpu_percent", "hours": "24", "subsystem": "",
                "days": "7", "path": "/etc/nginx", "q": "nginx", "unit": "", "program": "sshd"}
    return {p: defaults.get(p, "") for p in re.findall(r":(\w+)", sql)}


def measure(work: Path, reps: int) -> dict:
    import subprocess

    from hub.server import datasette_argv

    settings = load_settings(data_dir=work)
    port = free_port()
    ds = subprocess.Popen(datasette_argv(settings, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                timed_get(f"{base}/-/versions.json")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        meta = yaml.safe_load((shipped("datasette") / "metadata.yml").read_text())
        pages = {"baseline select 1": f"{base}/homelab.json?sql=select+1"}
        for name, q in meta["databases"]["homelab"]["queries"].items():
            pages[name] = f"{base}/homelab/{name}.json?" + urllib.parse.urlencode(params_for(q["sql"]))
        pages["dashboard"] = f"{base}/-/dashboard"
        pages["search"] = f"{base}/-/search?q=nginx"
        pages["events table (node facet)"] = f"{base}/homelab/events.json?node=node03&_size=100"
        out = {}
        for name, url in pages.items():
            timed_get(url)  # warm
            out[name] = statistics.median(timed_get(url) for _ in range(reps))
        return out
    finally:
        ds.terminate()
        ds.wait(20)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench queries")
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true",
                    help="4 days instead of --days (about a minute): the slowest pages read the last 24 hours, "
                         "which are the same; full-text search and 30-day pages see less history")
    a = ap.parse_args()
    if a.quick:
        a.days = min(a.days, 4.0)
    work = Path(tempfile.mkdtemp(prefix="bench-queries-"))
    try:
        b = asyncio.run(build(a.nodes, a.days, work))
        size = (work / "homelab.db").stat().st_size
        times = measure(work, a.reps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = times.pop("baseline select 1")
    # max_ms: the stored queries and the homelab pages (what the 100 ms target is about).
    # The generic table page of `events` is Datasette's own and is reported beside it.
    table_page = times.pop("events table (node facet)")
    slowest = max(times, key=times.get)
    print(json.dumps({
        "bench": "queries", "quick": a.quick, "nodes": a.nodes, "days": a.days, "events": b["events"], "db_mb": round(size / 1e6, 1),
        "build_s": round(b["build_s"], 1), "max_ms": round(times[slowest], 1), "slowest": slowest,
        "baseline_ms": round(base, 1), "ratio": round(times[slowest] / base, 2),
        "events_table_page_ms": round(table_page, 1),
        "pages_ms": {k: round(v, 1) for k, v in sorted(times.items(), key=lambda kv: -kv[1])},
    }))


if __name__ == "__main__":
    main()
