"""Findings 9 and the issue's fuzz clause: malformed frames against a real hub subprocess on
loopback. Every one is answered below 500 (a 5xx makes the agent retry the frame forever).
Deep nesting (which made msgspec raise RecursionError) is tried on purpose, alongside random
bytes, random msgpack, mutated valid batches and bodies for /v1/join."""

from __future__ import annotations

import http.client
import json
import os
import time

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seclib import root

from agent import wire

PER_EXAMPLE = 100
EXAMPLES = 101  # 10,100 frames in all

leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64 - 1).filter(lambda i: -2**63 <= i < 2**64),
                 st.floats(allow_nan=True), st.text(max_size=20), st.binary(max_size=20))
anything = st.recursive(leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                        max_leaves=20)

json_like = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=20),
                         lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                         max_leaves=20)


def nested(depth: int, opener: bytes) -> bytes:
    return opener * depth + b"\xc0"


def valid_event(i: int) -> bytes:
    return wire.encode_event(wire.Metrics(ts=1_700_000_000 + i, samples={"cpu_percent": 1.0}))


def deep_event_frame(depth: int, opener: bytes, seq: int = 1) -> bytes:
    """A well-formed frame whose one event, of a kind this hub does not know, nests deeply."""
    ev = (b"\x83" + msgspec.msgpack.encode("kind") + msgspec.msgpack.encode("future_kind")
          + msgspec.msgpack.encode("ts") + msgspec.msgpack.encode(1.0) + msgspec.msgpack.encode("x")
          + nested(depth, opener))
    return wire.encode_batch("n1", 1.0, [(seq, ev)])


@st.composite
def bodies(draw) -> tuple[str, bytes]:
    kind = draw(st.integers(0, 8))
    if kind == 0:
        return "/v1/ingest", draw(st.binary(max_size=300))
    if kind == 1:  # msgpack of random shape
        return "/v1/ingest", msgspec.msgpack.encode(draw(anything))
    if kind == 2:  # a whole frame nested deeply
        return "/v1/ingest", nested(draw(st.integers(500, 200_000)), draw(st.sampled_from([b"\x91", b"\x81\xa1k"])))
    if kind == 3:  # a good frame with one deeply nested event of an unknown kind
        return "/v1/ingest", deep_event_frame(draw(st.integers(500, 100_000)),
                                              draw(st.sampled_from([b"\x91", b"\x81\xa1k", b"\xdc\x00\x01"])),
                                              draw(st.integers(1, 2**62)))
    if kind == 4:  # a good frame of random events
        events = draw(st.lists(anything.map(msgspec.msgpack.encode), max_size=3))
        return "/v1/ingest", wire.encode_batch("n1", 1.0, [(i + 1, e) for i, e in enumerate(events)])
    if kind in (5, 6):  # a valid frame, mutated
        good = bytearray(wire.encode_batch("n1", 1.0, [(draw(st.integers(1, 50)), valid_event(1))]))
        for _ in range(draw(st.integers(1, 4))):
            good[draw(st.integers(0, len(good) - 1))] = draw(st.integers(0, 255))
        return "/v1/ingest", bytes(good[: draw(st.integers(0, len(good)))] if kind == 6 else good)
    if kind == 7:  # dicts that look like frames
        frame = {"v": draw(st.sampled_from([1, 2, -1, "1"])), "node": draw(st.sampled_from(["n1", "", "n2", 5])),
                 "sent": draw(leaf), "events": draw(st.lists(st.tuples(leaf, anything), max_size=3))}
        return "/v1/ingest", msgspec.msgpack.encode(frame)
    deep = draw(st.integers(0, 100_000))
    if draw(st.booleans()):
        return "/v1/join", ("[" * deep + "]" * deep).encode()
    if deep % 2:
        return "/v1/join", msgspec.json.encode(draw(json_like))
    return "/v1/join", draw(st.binary(max_size=200))


@pytest.fixture(scope="module")
def fuzz_hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    env = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("HOMELAB_")}
    h = root.HubProcess(tmp / "hub", root.free_port(), tmp / "hub.log").start()
    token = h.enroll("n1")
    conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=60)
    conn.request("POST", "/v1/join", body=json.dumps({"token": token}), headers={"Content-Type": "application/json"})
    cred = json.loads(conn.getresponse().read())["credential"]
    stats = {"sent": 0, "by_status": {}, "conn": conn, "cred": cred, "hub": h}
    yield stats
    conn.close()
    h.stop()
    os.environ.update(env)
    assert stats["sent"] >= 10_000, stats["by_status"]
    assert all(s < 500 for s in stats["by_status"]), (stats["by_status"], h.proc.output()[-3000:])


def _send(stats, path: str, body: bytes) -> int:
    for attempt in (0, 1):
        conn = stats["conn"]
        try:
            conn.request("POST", path, body=body, headers={"Authorization": f"Bearer {stats['cred']}",
                                                             "Content-Type": "application/msgpack"})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (http.client.HTTPException, ConnectionError):
            if attempt:
                raise
            conn.close()  # the hub may close a connection after an error; open another once
            stats["conn"] = http.client.HTTPConnection("127.0.0.1", stats["hub"].port, timeout=60)
    raise AssertionError("unreachable")


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(st.lists(bodies(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
def test_malformed_frames_never_get_a_5xx(fuzz_hub, frames):
    t0 = time.monotonic()
    for path, body in frames:
        status = _send(fuzz_hub, path, body)
        fuzz_hub["sent"] += 1
        fuzz_hub["by_status"][status] = fuzz_hub["by_status"].get(status, 0) + 1
        assert status < 500, (path, body[:200], status)
    assert time.monotonic() - t0 < 60


def test_deep_nesting_is_a_400_naming_the_problem(fuzz_hub):
    conn = fuzz_hub["conn"]
    conn.request("POST", "/v1/ingest", body=deep_event_frame(100_000, b"\x91"),
                 headers={"Authorization": f"Bearer {fuzz_hub['cred']}"})
    resp = conn.getresponse()
    assert resp.status == 400 and "nested too deeply" in json.loads(resp.read())["error"]
