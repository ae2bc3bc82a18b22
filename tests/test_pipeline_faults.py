"""Nothing is lost: real hub and agent processes under kill -9, outages, locks and a full disk."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import aiohttp
import pytest

from agent import wire
from agent.spool import Spool
from tests.conftest import join_agent, wait_for


def fill_spool(state_dir, n: int) -> str:
    """Put n log events in the agent's spool; return the checksum of what was put."""
    sp = Spool(state_dir / "spool.db", 10**10)
    now = time.time()  # within retention: the hub's maintenance would expire old events
    h = hashlib.sha256()
    for k in range(0, n, 5000):
        msgs = [f"event {i} {os.urandom(4).hex()}" for i in range(k, min(n, k + 5000))]
        for m in msgs:
            h.update(m.encode())
        sp.append([wire.encode_event(wire.Log(ts=now + i * 1e-3, source="test", message=m)) for i, m in enumerate(msgs, k)])
    sp.close()
    return h.hexdigest()


def stored_checksum(hub, node: str) -> tuple[int, str, bool]:
    rows = hub.query("SELECT seq, json_extract(data, '$.message') FROM events_full WHERE node = ? AND kind = 'log' ORDER BY seq", (node,))
    h = hashlib.sha256()
    for _, m in rows:
        h.update(m.encode())
    seqs = [r[0] for r in rows]
    return len(rows), h.hexdigest(), seqs == list(range(1, len(seqs) + 1))


@pytest.mark.slow
def test_kill9_hub_mid_stream_of_100k_events(tmp_path, hub_process, agent_process):
    n = 100_000
    hub = hub_process().start()
    state = tmp_path / "agent"
    join_agent(hub.url, hub.enroll("n1"), state)
    checksum = fill_spool(state, n)
    agent = agent_process(state, "--collectors", "inventory", "-v")
    count = lambda: hub.query("SELECT count(*) FROM events WHERE node = 'n1'")[0][0]  # noqa: E731
    wait_for(lambda: count() > 5_000, 60, interval=0.01, what="the stream to start")
    hub.kill9()
    mid = count()
    assert 0 < mid < n, f"killed too late to prove anything ({mid} of {n})"
    hub.start()  # same data dir and port
    wait_for(lambda: count() >= n, 120, interval=0.2, what="backfill after kill -9")
    time.sleep(1)
    got, digest, contiguous = stored_checksum(hub, "n1")
    assert (got, digest, contiguous) == (n, checksum, True)
    assert hub.query("SELECT count(*) FROM (SELECT seq FROM events WHERE node = 'n1' GROUP BY seq HAVING count(*) > 1)")[0][0] == 0
    assert agent.alive()


def test_hub_down_agent_restarted_then_backfill(tmp_path, hub_process, agent_process):
    hub = hub_process().start()
    state, watched = tmp_path / "agent", tmp_path / "watched"
    watched.mkdir()
    join_agent(hub.url, hub.enroll("n1"), state)
    args = ("--collectors", "files", "--watch", str(watched))
    files = lambda: {r[0] for r in hub.query("SELECT json_extract(data, '$.path') FROM events WHERE kind = 'file'")}  # noqa: E731
    a = agent_process(state, *args)
    time.sleep(1.5)  # baseline taken
    (watched / "while-up").write_text("1")
    wait_for(lambda: str(watched / "while-up") in files(), 20, what="first event")
    hub.stop()
    (watched / "hub-down-agent-up").write_text("2")
    time.sleep(1)
    assert a.terminate() == 0  # SIGTERM: flushes to the spool, exits cleanly
    (watched / "both-down").write_text("3")  # seen by the agent's baseline scan at start
    a2 = agent_process(state, *args)
    time.sleep(1.5)
    (watched / "hub-down-agent-restarted").write_text("4")
    time.sleep(1)
    assert a2.alive()
    hub.start()
    want = {str(watched / n) for n in ("while-up", "hub-down-agent-up", "both-down", "hub-down-agent-restarted")}
    wait_for(lambda: want <= files(), 60, what="backfill")
    rows = hub.query("SELECT seq, json_extract(data, '$.path') FROM events WHERE node = 'n1' ORDER BY seq")
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    paths = [r[1] for r in rows if r[1]]
    assert len(paths) == len(set(paths)) == 4  # each change exactly once


def metric_batch(seqs) -> bytes:
    return wire.encode_batch("n1", time.time(), [(s, wire.encode_event(wire.Metrics(ts=time.time(), samples={"x": 1.0}))) for s in seqs])


async def post(url, cred, body):
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {cred}"}) as s:
        async with s.post(f"{url}/v1/ingest", data=io.BytesIO(body)) as r:
            return r.status, await r.json()


async def _join(hub):
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{hub.url}/v1/join", json={"token": hub.enroll("n1")}) as r:
            return (await r.json())["credential"]


async def test_database_locked_is_503_and_nothing_changes(hub):
    cred = await _join(hub)
    assert (await post(hub.url, cred, metric_batch([1])))[0] == 200
    blocker = sqlite3.connect(hub.data_dir / "homelab.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        status, body = await post(hub.url, cred, metric_batch([2, 3]))
        assert status == 503 and "locked" in body["error"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await post(hub.url, cred, metric_batch([2, 3]))) [1]["ack"] == 3
    assert hub.query("SELECT seq FROM events ORDER BY seq") == [(1,), (2,), (3,)]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount a tmpfs")
def test_disk_full_is_503_and_agent_keeps_its_spool(tmp_path, hub_process, agent_process):
    small = tmp_path / "small"
    small.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {r.stderr.decode().strip()}")
    try:
        hub = hub_process(data_dir=small / "hub").start()
        state = tmp_path / "agent"
        join_agent(hub.url, hub.enroll("n1"), state)
        fill_spool(state, 30_000)  # ~3 MB of JSON on the hub side: more than fits
        agent = agent_process(state, "--collectors", "inventory")
        wait_for(lambda: "503" in agent.output(), 180, what="the agent to see 503")
        left = Spool(state / "spool.db", 10**10)
        pending = len(left)
        left.close()
        assert pending > 0
        stored = hub.query("SELECT count(*), max(seq) FROM events WHERE node = 'n1'")[0]
        assert stored[0] == stored[1]  # whatever was stored is contiguous; nothing half-written
        # free space: the rest arrives, exactly once
        agent.terminate()
        hub.stop()
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        hub.start()
        agent = agent_process(state, "--collectors", "inventory")
        wait_for(lambda: hub.query("SELECT count(*) FROM events WHERE kind = 'log'")[0][0] == 30_000, 300,
                 what="the rest after freeing space")
        # The agent keeps shipping (inventory events numbered after the 30,000 logs): stop it,
        # then count and number in ONE query. Two queries a moment apart once read 30000 vs
        # 30002: the two inventory events had arrived in between; nothing was missing.
        agent.terminate()
        count, lo, hi = hub.query("SELECT count(*), min(seq), max(seq) FROM events WHERE node = 'n1'")[0]
        assert (count, lo) == (hi, 1)  # 1..max, every one stored once
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)



def test_reenrolled_node_with_a_fresh_state_dir_loses_nothing(tmp_path, hub_process):
    hub = hub_process().start()
    first = tmp_path / "first"
    join_agent(hub.url, hub.enroll("n1"), first)
    sp = Spool(first / "spool.db", 10**9)
    sp.append([wire.encode_event(wire.Log(ts=time.time(), source="t", message=f"old {i}")) for i in range(50)])
    sp.close()
    # ship the first life's 50 events with a real agent, then reinstall from scratch
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--state-dir", str(first), "--collectors", "inventory"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: hub.query("SELECT count(*) FROM events WHERE kind = 'log'")[0][0] == 50, 30, what="first life")
    finally:
        proc.terminate()
        proc.wait(20)
    second = tmp_path / "second"
    join_agent(hub.url, hub.enroll("n1"), second)
    sp = Spool(second / "spool.db", 10**9)  # numbering continues after the hub's last seq
    assert sp.next_seq > hub.query("SELECT last_seq FROM nodes WHERE name = 'n1'")[0][0]
    sp.close()
