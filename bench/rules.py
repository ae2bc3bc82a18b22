"""python -m bench rules: how fast the rules engine evaluates, and how soon an alert follows a commit.

1. Throughput: 50 rules (the shipped set plus generated variants, loaded from YAML like
   the hub does) evaluate a realistic event mix on one thread, as fast as it goes. The
   baseline, measured in the same run, is the same loop with no rules (dispatch only).
2. Latency: a real writer (SQLite, WAL) ingests 10,000 events/s (or, with --saturate N, as
   fast as it can take N streams of 1,000-event batches) while the rules thread evaluates
   them; every 100 ms a sudoers change is committed, and the time from its commit to its
   alert being stored is measured.

Last line: one JSON object with events_per_s, p50_ms, p99_ms (and the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from agent import wire
from bench.common import event_mix
from hub.paths import shipped
from hub.rules.engine import Engine
from hub.rules.loader import load_paths
from hub.rules.service import RulesService
from hub.store import Writer

PROGRAMS = ["nginx", "cron", "kernel", "systemd", "postfix", "dovecot", "named", "smartd", "sudo"]


def generated_rules(n: int) -> str:
    """Variants of the shipped rules: log patterns per program, metric thresholds, file paths."""
    out = ["rules:"]
    for i in range(n):
        kind = i % 3
        if kind == 0:
            prog = PROGRAMS[i % len(PROGRAMS)]
            out += [f"  - name: gen-log-{i}", "    event:", "      kind: log",
                    f"      where: {{program: {prog}, severity: {{lte: 3}}}}",
                    "      extract: {message: 'status=(?P<status>5\\d\\d)'}",
                    "    aggregate: {fn: count, window: 5m}", f"    when: {{value: {{gte: {50 + i}}}}}",
                    "    group_by: [node, status]"]
        elif kind == 1:
            metric = ["cpu_percent", "load1", "memory_used_ratio"][(i // 3) % 3]
            limit = {"cpu_percent": 99.5, "load1": 3.99, "memory_used_ratio": 0.995}[metric]
            out += [f"  - name: gen-metric-{i}", f"    metric: {metric}",
                    f"    when: {{value: {{gte: {limit}}}}}", f"    for: {i % 5 + 1}m"]
        else:
            out += [f"  - name: gen-file-{i}", "    event:", "      kind: file",
                    f"      where: {{path: {{regex: '^/etc/(app{i}|svc{i})/.*\\.conf$'}}, action: [modify, create]}}",
                    "    group_by: [node, path]", "    keep_firing_for: 10m"]
    return "\n".join(out) + "\n"


def load_rules(work: Path, total: int = 50):
    shipped_rules, errors = load_paths([shipped("rules")])
    assert not errors, errors
    gen = work / "gen"
    gen.mkdir()
    (gen / "gen.yaml").write_text(generated_rules(total - len(shipped_rules)))
    rules, errors = load_paths([shipped("rules"), gen])
    assert not errors, errors
    return rules


def workload(n: int, seed: int = 7) -> list[tuple[str, wire.Event]]:
    rng = random.Random(seed)
    t0 = time.time() - 3600
    out = []
    for i in range(n):
        ts = t0 + i * 0.001
        if i % 50 == 0:  # a trickle of failed SSH logins from a handful of addresses
            ev = wire.Log(ts=ts, source="/var/log/auth.log", program="sshd", pid=1000 + i % 7,
                          message=f"Failed password for root from 203.0.113.{i % 13} port {40000 + i % 999} ssh2")
        else:
            ev = event_mix(rng, i, ts)
        out.append((f"node{i % 20}", ev))
    return out


def throughput(rules, events, rounds: int = 3) -> float:
    best = 0.0
    for _ in range(rounds):
        eng = Engine(rules)
        t = time.perf_counter()
        for i, (node, ev) in enumerate(events):
            eng.feed(node, i, ev)
            if i % 10_000 == 0:
                eng.drain()
        eng.drain()
        best = max(best, len(events) / (time.perf_counter() - t))
    return best


async def latency(rules, work: Path, rate: int, seconds: float, saturate: int = 0) -> dict:
    """rate events/s in 50 ms ticks; or, with saturate=N, N streams of 1,000-event batches
    back to back (each waits only for its own ack, as agents with a backlog do), which keeps
    the writer busy all the time. Either way a sudoers change every 100 ms is timed."""
    writer = Writer(work / "homelab.db")
    writer.start()
    streams = max(1, saturate)
    writer.run_sync(lambda db: db.executemany("INSERT INTO nodes (name, created) VALUES (?, 0)",
                                              [(f"bench{i}",) for i in range(streams)]))
    commit_t: dict[int, float] = {}
    lat: list[float] = []

    def on_records(records):
        now = time.monotonic()
        for r in records:
            if r["transition"] == "firing" and r["rule"] == "sensitive-config-changed":
                for eid in r["events"]:
                    if eid in commit_t:
                        lat.append(now - commit_t.pop(eid))

    service = RulesService(rules, writer, [], on_records=on_records)

    def subscriber(committed):
        now = time.monotonic()
        for c in committed:
            if c.kind == "file" and c.event.path.startswith("/etc/sudoers.d/bench-"):
                commit_t[c.id] = now
        service.subscriber(committed)

    writer.subscribers.append(subscriber)
    service.start()
    enc = msgspec.json.Encoder().encode
    state = {"sent": 0, "trig": 0, "next_trig": 0.0}
    start = time.monotonic()

    async def stream(i: int, per_batch: int, tick: float | None) -> None:
        rng = random.Random(3 + i)
        node, seq = f"bench{i}", 0
        next_at = start
        while time.monotonic() - start < seconds:
            seqs, evs = [], []
            for _ in range(per_batch):
                seq += 1
                ev: wire.Event = event_mix(rng, seq, time.time())
                if i == 0 and time.monotonic() >= state["next_trig"]:
                    state["trig"] += 1
                    state["next_trig"] = time.monotonic() + 0.1
                    ev = wire.FileChange(ts=time.time(), action="modify", path=f"/etc/sudoers.d/bench-{state['trig']}")
                seqs.append(seq)
                evs.append(ev)
            datas = [enc(e).decode() for e in evs]
            frame = wire.Frame(node=node, sent=time.time(), seqs=seqs, events=evs, typed=True)
            await writer.ingest(node, frame, datas, "127.0.0.1")
            state["sent"] += len(evs)
            if tick is not None:
                next_at += tick
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    if saturate:
        # frames built in this thread while the writer commits others: the writer never waits
        await asyncio.gather(*(stream(i, 1000, None) for i in range(streams)))
    else:
        await stream(0, max(1, int(rate * 0.05)), 0.05)
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + 10
    while commit_t and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    service.stop()
    writer.stop()
    lat.sort()
    return {"ingest_events_per_s": state["sent"] / elapsed, "triggers": state["trig"], "alerts_measured": len(lat),
            "p50_ms": 1000 * statistics.median(lat) if lat else None,
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
            "max_ms": 1000 * lat[-1] if lat else None, "lost": len(commit_t)}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench rules")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rate", type=int, default=10_000, help="ingest rate for the latency run")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--saturate", type=int, default=0, metavar="N",
                    help="instead of --rate: N streams of 1,000-event batches back to back (the writer never idles)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-rules-"))
    try:
        rules = load_rules(work)
        events = workload(a.events)
        base = throughput([], events)
        eps = throughput(rules, events)
        lat = asyncio.run(latency(rules, work, a.rate, a.seconds, a.saturate))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "bench": "rules", "rules": len(rules), "events": a.events,
        "events_per_s": round(eps), "baseline_dispatch_per_s": round(base), "ratio": round(eps / base, 3),
        "target_events_per_s": 100_000,
        "p50_ms": None if lat["p50_ms"] is None else round(lat["p50_ms"], 1),
        "p99_ms": None if lat["p99_ms"] is None else round(lat["p99_ms"], 1),
        "max_ms": None if lat["max_ms"] is None else round(lat["max_ms"], 1),
        "ingest_events_per_s": round(lat["ingest_events_per_s"]), "saturate": a.saturate, "alerts_measured": lat["alerts_measured"],
        "triggers": lat["triggers"], "lost": lat["lost"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
