"""python -m bench fleet [--nodes 50] [--duration 120] [--senders 4]

50 simulated nodes against a real hub subprocess on loopback. Each node is agent-like: its
own credential from a real join, its own connection, one request in flight, the real wire
format, and events at the agent's default rates (a metrics sample of ~30 series every 10 s)
plus a realistic trickle of logs, file changes and shell commands, shipped as the agent's
shipper does (bulk kinds linger up to ship_linger to share a request, others go at once:
agent/shipper.py), and heartbeats when idle. --linger 0 is the old one-event-per-request.

Meanwhile /metrics is scraped every 15 s, as Prometheus would, and counted in the hub's CPU.

Measured over the sustained window (after every node has joined and sent once):
hub_cpu_percent (of one core, from the hub process's CPU time), hub_rss_mb (at the end),
mb_per_node_day (database growth, extrapolated), p99_commit_ms (request sent -> ack
received; the ack means committed). The baseline is the same hub idle for a few seconds
before the load, in the same run. Target: hub_cpu_percent < 10.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import multiprocessing as mp
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import wire  # noqa: E402
from agent.config import AGENT_OPTS  # noqa: E402
from agent.shipper import urgent  # noqa: E402

METRICS_EVERY = 10.0
LOG_EVERY = 6.0        # ~14k log lines per node per day: a quiet server
FILE_EVERY = 120.0
COMMAND_EVERY = 90.0
HEARTBEAT = 30.0

PROGRAMS = [("sshd", "ssh.service"), ("cron", "cron.service"), ("kernel", None),
            ("systemd", "init.scope"), ("nginx", "nginx.service"), ("dockerd", "docker.service")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics_sample(rng: random.Random, ts: float) -> wire.Metrics:
    s: dict[str, float] = {
        "cpu_percent": round(rng.uniform(1, 60), 1), "memory_total_bytes": 16e9,
        "memory_available_bytes": float(rng.randint(2_000_000_000, 12_000_000_000)),
        "memory_used_ratio": round(rng.random(), 4), "swap_total_bytes": 2e9,
        "swap_used_ratio": round(rng.random() / 10, 4), "load1": round(rng.uniform(0, 4), 2),
        "load5": round(rng.uniform(0, 3), 2), "load15": round(rng.uniform(0, 2), 2),
        "uptime_seconds": float(int(ts) % 10_000_000),
        "disk_read_bytes_per_second": round(rng.uniform(0, 5e6), 1),
        "disk_write_bytes_per_second": round(rng.uniform(0, 5e6), 1),
    }
    for m in ("/", "/home", "/var"):
        s[f'disk_total_bytes{{mount="{m}"}}'] = 5e11
        s[f'disk_free_bytes{{mount="{m}"}}'] = float(rng.randint(10**10, 4 * 10**11))
        s[f'disk_used_ratio{{mount="{m}"}}'] = round(rng.random(), 4)
    for nic in ("eth0", "wlan0", "tailscale0"):
        s[f'net_receive_bytes_per_second{{iface="{nic}"}}'] = round(rng.uniform(0, 1e6), 1)
        s[f'net_transmit_bytes_per_second{{iface="{nic}"}}'] = round(rng.uniform(0, 1e6), 1)
    for i in range(4):
        s[f'temperature_celsius{{chip="coretemp",sensor="Core {i}"}}'] = round(rng.uniform(35, 70), 1)
    return wire.Metrics(ts=ts, samples=s)


def log_line(rng: random.Random, ts: float, node: str) -> wire.Log:
    prog, unit = rng.choice(PROGRAMS)
    msg = rng.choice([
        f"Accepted publickey for admin from 100.64.{rng.randint(0, 255)}.{rng.randint(1, 254)} port {rng.randint(30000, 60000)} ssh2: ED25519 SHA256:{os.urandom(16).hex()}",
        "(root) CMD (test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; })",
        f"Started session-{rng.randint(1, 9999)}.scope - Session {rng.randint(1, 9999)} of User admin.",
        f'100.64.0.{rng.randint(1, 254)} - - "GET /api/v1/status HTTP/1.1" 200 {rng.randint(100, 9000)} "-" "curl/7.88"',
        f"EXT4-fs (sda1): mounted filesystem {os.urandom(8).hex()} r/w with ordered data mode.",
    ])
    return wire.Log(ts=ts, source="journald", message=msg, program=prog, pid=rng.randint(100, 60000),
                    severity=rng.choice([6, 6, 6, 5, 4, 3]), unit=unit, host=node)


def file_change(rng: random.Random, ts: float) -> wire.FileChange:
    path = rng.choice(["/etc/hosts", "/etc/resolv.conf", "/etc/nginx/nginx.conf", "/etc/ssh/sshd_config",
                       f"/etc/cron.d/job{rng.randint(1, 20)}"])
    return wire.FileChange(ts=ts, action="modify", path=path, size=rng.randint(100, 5000), mode=0o100644,
                           uid=0, gid=0, sha256=os.urandom(32).hex(), old_sha256=os.urandom(32).hex(),
                           content_changed=True,
                           diff=f"--- {path}\n+++ {path}\n@@ -1,3 +1,3 @@\n-old line {rng.random()}\n+new line {rng.random()}\n")


def command(rng: random.Random, ts: float) -> wire.Command:
    return wire.Command(ts=ts, command=rng.choice(["sudo systemctl restart nginx", "ls -la /var/log",
                                                   "docker ps", "df -h", "journalctl -u ssh -n 50",
                                                   "apt list --upgradable"]),
                        cwd="/root", user="admin", tty="pts/0", exit_code=0, duration_ms=rng.randint(3, 900),
                        shell="bash")


def make_event(kind: str, rng: random.Random, ts: float, node: str) -> wire.Event:
    if kind == "metrics":
        return metrics_sample(rng, ts)
    if kind == "log":
        return log_line(rng, ts, node)
    if kind == "file":
        return file_change(rng, ts)
    return command(rng, ts)


async def node_loop(url: str, node: str, cred: str, until: float, measure_from: float, out: dict,
                    linger: float) -> None:
    rng = random.Random(node)
    seq = 0
    now = time.time()
    # stagger: real nodes started at different moments
    nxt = {"metrics": now + rng.uniform(0, METRICS_EVERY), "log": now + rng.expovariate(1 / LOG_EVERY),
           "file": now + rng.expovariate(1 / FILE_EVERY), "command": now + rng.expovariate(1 / COMMAND_EVERY)}
    last_send = now
    pending: list[tuple[int, bytes]] = []
    due = math.inf  # as the agent's shipper: bulk kinds wait `linger`, others go at once
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=conn, headers={"Authorization": f"Bearer {cred}"}) as s:
        while True:
            kind = min(nxt, key=nxt.get)
            at = min(nxt[kind], last_send + HEARTBEAT, due)
            if at >= until:
                return
            await asyncio.sleep(max(0.0, at - time.time()))
            ts = time.time()
            if nxt[kind] <= at:
                ev = make_event(kind, rng, ts, node)
                seq += 1
                pending.append((seq, wire.encode_event(ev)))
                due = min(due, ts if urgent([ev]) else ts + linger)
                every = {"metrics": METRICS_EVERY, "log": LOG_EVERY, "file": FILE_EVERY, "command": COMMAND_EVERY}[kind]
                nxt[kind] += every if kind == "metrics" else rng.expovariate(1 / every)
            if due > time.time() and time.time() < last_send + HEARTBEAT:
                continue
            body = wire.encode_batch(node, ts, pending)
            n_events, pending, due = len(pending), [], math.inf
            t0 = time.perf_counter()
            async with s.post(f"{url}/v1/ingest", data=io.BytesIO(body),
                              headers={"Content-Type": "application/vnd.msgpack"}) as r:
                reply = await r.json()
            dt = (time.perf_counter() - t0) * 1000
            last_send = time.time()
            if r.status != 200:
                out["errors"] += 1
                continue
            assert reply["ack"] == seq, (node, reply, seq)
            if ts >= measure_from:
                out["latencies"].append(dt)
                out["requests"] += 1
                out["events"] += n_events


def sender(url: str, nodes: list[tuple[str, str]], until: float, measure_from: float, q, linger: float) -> None:
    out = {"latencies": [], "requests": 0, "events": 0, "errors": 0}

    async def main():
        await asyncio.gather(*(node_loop(url, n, c, until, measure_from, out, linger) for n, c in nodes))

    asyncio.run(main())
    q.put(out)


async def join_all(url: str, tokens: dict[str, str]) -> dict[str, str]:
    creds = {}
    async with aiohttp.ClientSession() as s:
        for node, token in tokens.items():
            async with s.post(f"{url}/v1/join", json={"token": token}) as r:
                body = await r.json()
                assert r.status == 200, body
                creds[node] = body["credential"]
    return creds


def scrape_until(url: str, until: float, every: float = 15.0) -> list[tuple[float, int]]:
    """GET /metrics every ``every`` seconds until ``until``: [(milliseconds, series served)]."""
    import urllib.request

    out = []
    nxt = time.time() + 1.0
    while nxt < until:
        time.sleep(max(0.0, nxt - time.time()))
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as r:
            body = r.read().decode()
        ms = (time.perf_counter() - t0) * 1000
        out.append((ms, sum(1 for ln in body.splitlines() if ln and not ln.startswith("#"))))
        nxt += every
    time.sleep(max(0.0, until - time.time()))
    return out


def db_bytes(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        page = db.execute("PRAGMA page_size").fetchone()[0]
        used = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        return used * page
    finally:
        db.close()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench fleet")
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--duration", type=float, default=120.0, help="sustained window in seconds (bounded to 1800)")
    ap.add_argument("--senders", type=int, default=4, help="sender processes")
    ap.add_argument("--linger", type=float, default=next(o.default for o in AGENT_OPTS if o.key == "ship_linger"),
                    help="the agents' ship_linger (default: the agent's default; 0: an event per request)")
    args = ap.parse_args()
    duration = min(max(args.duration, 10.0), 1800.0)
    from hub import auth
    from hub.store import open_db

    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    hub = None
    try:
        data = tmp / "hub"
        dbp = data / "homelab.db"
        db = open_db(dbp)
        db.execute("BEGIN IMMEDIATE")
        tokens = {f"node{i:02d}": auth.enroll(db, f"node{i:02d}", 3600) for i in range(args.nodes)}
        db.execute("COMMIT")
        db.close()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
        hub = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=open(tmp / "hub.log", "wb"), env=env, cwd=ROOT)  # noqa: SIM115
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if hub.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"hub did not start: {(tmp / 'hub.log').read_text()[-2000:]}")
            time.sleep(0.1)
        proc = psutil.Process(hub.pid)
        # baseline: the same hub, idle
        idle_s = 5.0
        c0 = proc.cpu_times()
        time.sleep(idle_s)
        c1 = proc.cpu_times()
        idle_cpu = 100 * ((c1.user + c1.system) - (c0.user + c0.system)) / idle_s

        creds = asyncio.run(join_all(url, tokens))
        warmup = METRICS_EVERY + 2  # every node has sent at least one metrics sample
        start = time.time()
        measure_from = start + warmup
        until = measure_from + duration
        items = list(creds.items())
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        procs = [ctx.Process(target=sender, args=(url, items[i::args.senders], until, measure_from, q, args.linger))
                 for i in range(args.senders)]
        for p in procs:
            p.start()
        time.sleep(max(0.0, measure_from - time.time()))
        size0 = db_bytes(dbp)
        t0, c0 = time.monotonic(), proc.cpu_times()
        scrapes = scrape_until(url, until)  # Prometheus's share of the hub's work, every 15 s
        t1, c1 = time.monotonic(), proc.cpu_times()
        rss = proc.memory_info().rss
        results = [q.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
        hub.terminate()
        hub.wait(60)
        size1 = db_bytes(dbp)
        lat = sorted(x for r in results for x in r["latencies"])
        elapsed = t1 - t0
        cpu = 100 * ((c1.user + c1.system) - (c0.user + c0.system)) / elapsed
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None
        report = {
            "bench": "fleet",
            "nodes": args.nodes,
            "duration_s": round(elapsed, 1),
            "requests": sum(r["requests"] for r in results),
            "events": sum(r["events"] for r in results),
            "linger_s": args.linger,
            "errors": sum(r["errors"] for r in results),
            "hub_cpu_percent": round(cpu, 2),
            "hub_idle_cpu_percent": round(idle_cpu, 2),
            "cpu_vs_target_ratio": round(cpu / 10.0, 3),  # < 1 meets the 10 % target
            "hub_rss_mb": round(rss / 2**20, 1),
            "mb_per_node_day": round((size1 - size0) / 2**20 / args.nodes * 86400 / elapsed, 2),
            "p50_commit_ms": round(lat[len(lat) // 2], 2) if lat else None,
            "p99_commit_ms": round(p99, 2) if p99 is not None else None,
            "metrics_scrapes": len(scrapes),
            "metrics_series": max((n for _ms, n in scrapes), default=0),
            "metrics_scrape_ms_max": round(max((ms for ms, _n in scrapes), default=0.0), 1),
        }
        print(json.dumps(report), flush=True)
    finally:
        if hub and hub.poll() is None:
            hub.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
