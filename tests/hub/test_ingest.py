"""Hub ingest over real HTTP on loopback: auth, dedup, gaps, bad frames."""

from __future__ import annotations

import asyncio
import io
import time

import aiohttp
import msgspec
import pytest

from agent import wire


async def join(hub, name="n1"):
    token = hub.enroll(name)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{hub.url}/v1/join", json={"token": token}) as r:
            assert r.status == 200, await r.text()
            return (await r.json())["credential"], token


def metric(i: int) -> bytes:
    return wire.encode_event(wire.Metrics(ts=1_700_000_000 + i, samples={"cpu_percent": float(i)}))


async def post(hub, cred, body: bytes):
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {cred}"}) as s:
        async with s.post(f"{hub.url}/v1/ingest", data=io.BytesIO(body)) as r:
            return r.status, await r.json()


async def test_ingest_dedup_and_ack(hub):
    cred, _ = await join(hub)
    body = wire.encode_batch("n1", time.time(), [(i, metric(i)) for i in range(1, 11)])
    assert await post(hub, cred, body) == (200, {"ack": 10, "stored": 10, "duplicates": 0})
    # the same batch again (a lost ack): acked, nothing stored twice
    assert await post(hub, cred, body) == (200, {"ack": 10, "stored": 0, "duplicates": 10})
    overlap = wire.encode_batch("n1", time.time(), [(i, metric(i)) for i in range(8, 13)])
    assert await post(hub, cred, overlap) == (200, {"ack": 12, "stored": 2, "duplicates": 3})
    rows = hub.query("SELECT seq FROM events WHERE node = 'n1' ORDER BY seq")
    assert [r[0] for r in rows] == list(range(1, 13))
    assert hub.query("SELECT count(*) FROM samples")[0][0] == 12


async def test_gap_refused_until_covered_by_dropped(hub):
    cred, _ = await join(hub)
    await post(hub, cred, wire.encode_batch("n1", time.time(), [(1, metric(1))]))
    status, body = await post(hub, cred, wire.encode_batch("n1", time.time(), [(5, metric(5))]))
    assert status == 409 and body["expected"] == 2 and "gap" in body["error"]
    marker = wire.encode_event(wire.Dropped(ts=1.0, first_seq=2, count=3, reason="spool full"))
    status, body = await post(hub, cred, wire.encode_batch("n1", time.time(), [(4, marker), (5, metric(5))]))
    assert (status, body["ack"]) == (200, 5)


@pytest.mark.parametrize("body,needle", [
    (b"\xc1garbage", "malformed batch"),
    (msgspec.msgpack.encode({"v": 1, "node": "n1", "sent": 1.0, "events": [[2, 1], [1, 2]]}), "does not increase"),
    (msgspec.msgpack.encode({"v": 9, "node": "n1", "sent": 1.0, "events": []}), "wire version 9"),
])
async def test_bad_frames_are_4xx_and_change_nothing(hub, body, needle):
    cred, _ = await join(hub)
    await post(hub, cred, wire.encode_batch("n1", time.time(), [(1, metric(1))]))
    status, reply = await post(hub, cred, body)
    assert status == 400 and needle in reply["error"]
    assert hub.query("SELECT count(*) FROM events")[0][0] == 1
    assert hub.query("SELECT last_seq FROM nodes WHERE name = 'n1'")[0][0] == 1


async def test_bad_event_named_by_index(hub):
    cred, _ = await join(hub)
    bad = msgspec.msgpack.encode({"kind": "metrics", "ts": 1.0, "samples": "nope"})
    status, reply = await post(hub, cred, wire.encode_batch("n1", 1.0, [(1, metric(1)), (2, bad)]))
    assert status == 400 and "events[1]" in reply["error"] and "samples" in reply["error"]
    assert hub.query("SELECT count(*) FROM events")[0][0] == 0


async def test_unknown_kind_is_kept_not_projected(hub):
    cred, _ = await join(hub)
    future = msgspec.msgpack.encode({"kind": "gpu_metrics", "ts": 2.0, "util": 0.5})
    status, reply = await post(hub, cred, wire.encode_batch("n1", 1.0, [(1, future)]))
    assert status == 200
    assert hub.query("SELECT kind, json_extract(data, '$.util') FROM events") == [("gpu_metrics", 0.5)]


async def test_oversized_batch_413(hub):
    cred, _ = await join(hub)
    status, reply = await post(hub, cred, b"\x00" * (wire.MAX_BATCH_BYTES + 10))
    assert status == 413


async def test_credentials(hub):
    cred, token = await join(hub)
    body = wire.encode_batch("n1", 1.0, [(1, metric(1))])
    assert (await post(hub, "hln_wrong", body))[0] == 401
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{hub.url}/v1/ingest", data=body) as r:
            assert r.status == 401 and "missing credential" in (await r.json())["error"]
        # a join token works once
        async with s.post(f"{hub.url}/v1/join", json={"token": token}) as r:
            assert r.status == 401 and "already used" in (await r.json())["error"]
    cred2, _ = await join(hub, "n2")
    status, reply = await post(hub, cred2, body)  # n2's credential, n1's batch
    assert status == 403 and "n1" in reply["error"]
    assert hub.query("SELECT count(*) FROM events")[0][0] == 0
    assert hub.query("SELECT count(*) FROM ingest_errors WHERE status IN (401, 403)")[0][0] >= 3


async def test_expired_join_token(hub):
    token = hub.enroll("n3", ttl=-1)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{hub.url}/v1/join", json={"token": token}) as r:
            assert r.status == 401 and "expired" in (await r.json())["error"]


async def test_non_finite_or_absurd_numbers_are_refused_at_the_door(hub):
    cred, _ = await join(hub)
    for bad in ({"kind": "metrics", "ts": float("inf"), "samples": {"x": 1.0}},
                {"kind": "metrics", "ts": 1.0, "samples": {"x": float("nan")}},
                {"kind": "log", "ts": 1e19, "source": "s", "message": "m"}):
        status, reply = await post(hub, cred, wire.encode_batch("n1", 1.0, [(1, msgspec.msgpack.encode(bad))]))
        assert status == 400 and "events[0]" in reply["error"], reply
    assert (await post(hub, cred, wire.encode_batch("n1", 1.0, [(1, metric(1))])))[0] == 200


async def test_a_batch_the_store_cannot_hold_is_refused_alone_and_the_writer_lives(hub):
    cred, _ = await join(hub)
    cred2, _ = await join(hub, "n2")
    huge = wire.encode_event(wire.FileChange(ts=1.0, action="modify", path="/etc/x", size=2**64 - 1))
    bad = post(hub, cred, wire.encode_batch("n1", 1.0, [(1, huge)]))
    good = post(hub, cred2, wire.encode_batch("n2", 1.0, [(1, metric(1))]))
    (s1, r1), (s2, r2) = await asyncio.gather(bad, good)  # likely one commit group
    assert s1 == 400 and "cannot hold" in r1["error"]
    assert (s2, r2["ack"]) == (200, 1)
    assert (await post(hub, cred, wire.encode_batch("n1", 1.0, [(1, metric(1))])))[0] == 200
    assert hub.query("SELECT node, seq FROM events ORDER BY node") == [("n1", 1), ("n2", 1)]


def test_run_sync_rolls_back_a_failing_job(tmp_path):
    from hub.store import Writer

    w = Writer(tmp_path / "h.db")
    w.start()
    try:
        def half(db):
            db.execute("INSERT INTO nodes (name, created) VALUES ('ghost', 0)")
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            w.run_sync(half)
        assert w.run_sync(lambda db: db.execute("SELECT count(*) FROM nodes").fetchone()[0]) == 0
    finally:
        w.stop()
