"""A small fleet's month of history, sent to a real hub through its real ingest route (join,
then msgpack batches to /v1/ingest), then rolled up by the hub's own rollup code."""

from __future__ import annotations

import math
import random
import time

import aiohttp

from agent import wire
from hub import rollup
from hub.keys import SETTINGS

DAY = 86400
# A long name on purpose: pages and 80-column tables must show it whole.
NODES = ("nas01", "pi-garage", "workstation-with-a-rather-long-hostname")


def samples(rng: random.Random, i: int, ts: float, now: float) -> dict[str, float]:
    day = math.sin(ts / DAY * 2 * math.pi)  # a daily rhythm, so the charts have a shape
    s = {
        "cpu_percent": max(0.0, 20 + 15 * day + rng.random() * 10 + 10 * i),
        "memory_used_ratio": 0.45 + 0.1 * day + rng.random() * 0.03,
        "swap_used_ratio": 0.02 + rng.random() * 0.01,
        "load1": 0.8 + 0.5 * day + rng.random() * 0.4, "load5": 0.7 + 0.4 * day, "load15": 0.6 + 0.3 * day,
        'disk_used_ratio{mount="/"}': 0.40 + 0.1 * i,
        # nas01's /srv fills over the month and crosses 90% (disk-almost-full fires)
        'disk_used_ratio{mount="/srv"}': 0.70 + 0.25 * (1 - (now - ts) / (30 * DAY)) if i == 0 else 0.3,
        'net_receive_bytes_per_second{iface="eth0"}': 2e5 + 1.5e5 * day + rng.random() * 5e4,
        'net_transmit_bytes_per_second{iface="eth0"}': 4e4 + 2e4 * day + rng.random() * 1e4,
        "disk_read_bytes_per_second": 1e6 + rng.random() * 5e5,
        "disk_write_bytes_per_second": 5e5 + rng.random() * 2e5,
    }
    if i == 0:
        s['temperature_celsius{chip="coretemp",sensor="Package id 0"}'] = 45 + 8 * day + rng.random()
    return s


def history(i: int, now: float, days: float) -> list[wire.Event]:
    rng = random.Random(i)
    out: list[wire.Event] = []
    t = now - days * DAY
    while t < now - 10:
        out.append(wire.Metrics(ts=t, samples=samples(rng, i, t, now)))
        t += 30 if now - t < 6 * 3600 else 300  # dense for the raw tier, sparse before
    out += [
        wire.Package(ts=now - 3 * DAY, action="upgrade", manager="dpkg", name="openssl",
                     version="3.0.15-1", old_version="3.0.14-1"),
        wire.FileChange(ts=now - 2 * 3600, action="modify", path="/etc/ssh/sshd_config", size=10, mode=0o644,
                        uid=0, gid=0, sha256="b" * 64, old_sha256="a" * 64, content_changed=True,
                        diff="-PermitRootLogin yes\n+PermitRootLogin no\n"),
        wire.Service(ts=now - 1800, unit="nginx.service", active="failed", sub="failed", result="exit-code",
                     restarts=3, previous="active"),
    ]
    return sorted(out, key=lambda e: e.ts)


async def seed(hub, days: float = 30, names=NODES) -> None:
    """Join every node and send its history in batches; then roll up until the tiers are done."""
    now = time.time()
    async with aiohttp.ClientSession() as s:
        for i, name in enumerate(names):
            async with s.post(f"{hub.url}/v1/join", json={"token": hub.enroll(name)}) as r:
                assert r.status == 200, await r.text()
                cred = (await r.json())["credential"]
            evs = history(i, now, days)
            for start in range(0, len(evs), 2000):
                chunk = [(start + k + 1, wire.encode_event(e)) for k, e in enumerate(evs[start:start + 2000])]
                body = wire.encode_batch(name, time.time(), chunk)
                async with s.post(f"{hub.url}/v1/ingest", data=body,
                                  headers={"Authorization": f"Bearer {cred}"}) as r:
                    assert r.status == 200, await r.text()
    settings = hub.app[SETTINGS]
    while await hub.writer.run(lambda db: rollup.tick(db, time.time(), settings)):
        pass
