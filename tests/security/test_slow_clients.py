"""Finding 11: a client cannot hold connections open by sending nothing, half its headers, or
its body a byte at a time: the hub closes them after read_timeout (a body gets 3x)."""

from __future__ import annotations

import json
import os
import select
import socket
import time

import pytest
from seclib import root

TIMEOUT = 2


@pytest.fixture
def slow_hub(tmp_path, monkeypatch):
    for k in [k for k in os.environ if k.startswith("HOMELAB_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("HOMELAB_HUB_READ_TIMEOUT", str(TIMEOUT))
    h = root.HubProcess(tmp_path / "hub", root.free_port(), tmp_path / "hub.log").start()
    yield h
    h.stop()


def healthz(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return int(s.recv(100).split(b" ")[1])


def test_idle_and_half_sent_requests_are_closed(slow_hub):
    port = slow_hub.port
    socks = []
    for i in range(150):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if i % 3 == 1:  # half the headers
            s.sendall(b"POST /v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bear")
        elif i % 3 == 2:  # headers, then a trickle of the body
            s.sendall(b"POST /v1/join HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"to")
        socks.append(s)
    t0 = time.monotonic()
    assert healthz(port) == 200  # the hub still answers others meanwhile
    open_ = {s.fileno(): s for s in socks}
    replies: dict[int, bytes] = {}
    deadline = t0 + 60
    while open_ and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_), [], [], 0.5)
        for fd in ready:
            try:
                data = open_[fd].recv(4096)
            except ConnectionResetError:
                data = b""
            if data:
                replies[fd] = replies.get(fd, b"") + data
            else:
                open_.pop(fd).close()
        for s in list(open_.values())[:5]:  # keep a few tricklers trickling
            if s.fileno() % 3 == 2:
                try:
                    s.send(b" ")
                except OSError:
                    pass
    elapsed = time.monotonic() - t0
    leftover = len(open_)
    for s in open_.values():
        s.close()
    assert leftover == 0, f"{leftover} of 150 connections still open after {elapsed:.0f}s"
    assert elapsed < 3 * TIMEOUT + 20
    timed_out = [r for r in replies.values() if r.startswith(b"HTTP/1.1 408")]
    assert len(timed_out) == 50, [r[:60] for r in replies.values()][:5]
    assert all(b"not sent in time" in r for r in timed_out)
    assert healthz(port) == 200


def test_a_slow_but_steady_agent_is_not_cut_off(slow_hub):
    """Within the limits nothing changes: a request whose body arrives in time is served."""
    with socket.create_connection(("127.0.0.1", slow_hub.port), timeout=30) as s:
        body = json.dumps({"token": "hlj_nope"}).encode()
        s.sendall(b"POST /v1/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body[:5])
        time.sleep(TIMEOUT / 2)  # slower than at once, well within 3 x read_timeout
        s.sendall(body[5:])
        assert s.recv(100).startswith(b"HTTP/1.1 401")


def test_a_real_agent_idle_longer_than_read_timeout_keeps_delivering(slow_hub, tmp_path, agent_process):
    """The hub closes the agent's kept-alive connection between heartbeats (heartbeat 3 s >
    read_timeout 2 s); the agent reconnects and nothing is lost or refused."""
    state = tmp_path / "agent"
    root.join_agent(slow_hub.url, slow_hub.enroll("n1"), state)
    agent = agent_process(state, "--collectors", "inventory", env={"HOMELAB_AGENT_HEARTBEAT": "3"})

    def seen() -> float:
        return slow_hub.query("SELECT coalesce(last_seen, 0) FROM nodes WHERE name = 'n1'")[0][0]

    first = root.wait_for(seen, 60, what="the agent's first batch")
    root.wait_for(lambda: seen() > first + 6, 60, what="heartbeats across several idle closes")
    assert agent.alive()
    assert slow_hub.query("SELECT count(*) FROM events WHERE node = 'n1' AND kind = 'dropped'") == [(0,)]
    assert slow_hub.query("SELECT count(*) FROM ingest_errors") == [(0,)]
