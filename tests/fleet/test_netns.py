"""Several agents, each in its own network namespace, joined over veth links to a bridge in
the root namespace where the hub listens. One node is partitioned (its link set down) while
it keeps producing events, then healed: its backlog arrives exactly once and in order. A node
with a skewed clock is detected and reported; ordering rests on sequence numbers only."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fleetlib import Proc, free_port, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2"),
]

N_AGENTS = 3


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


class Fleet:
    """A bridge in the root namespace and one namespace per node, all uniquely named."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.bridge = f"hlb{tag}"
        r = secrets.randbelow(250) + 1
        self.prefix = f"10.{200 + secrets.randbelow(50)}.{r}"
        self.hub_ip = f"{self.prefix}.1"
        self.tag = tag
        self.namespaces: list[str] = []
        self.links: list[str] = []  # root-side veth ends

    def up(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.hub_ip}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_node(self, i: int) -> str:
        ns, root_end, ns_end = f"hln{self.tag}{i}", f"hlv{self.tag}{i}", f"hlp{self.tag}{i}"
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("link", "add", root_end, "type", "veth", "peer", "name", ns_end)
        self.links.append(root_end)
        ip("link", "set", ns_end, "netns", ns)
        ip("link", "set", root_end, "master", self.bridge)
        ip("link", "set", root_end, "up")
        ip("-n", ns, "addr", "add", f"{self.prefix}.{i + 10}/24", "dev", ns_end)
        ip("-n", ns, "link", "set", ns_end, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def teardown(self) -> None:
        for link in self.links:
            ip("link", "del", link, check=False)
        for ns in self.namespaces:
            ip("netns", "del", ns, check=False)
        ip("link", "del", self.bridge, check=False)


@pytest.fixture
def fleet():
    f = Fleet()
    try:
        f.up()
        yield f
    finally:
        f.teardown()
        left = ip("netns", "list").stdout
        assert f.tag not in left, f"namespaces left behind: {left}"


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def seqs(h, node: str) -> list[int]:
    return [r[0] for r in h.query("SELECT seq FROM events WHERE node = ? ORDER BY id", (node,))]


def test_fleet_in_namespaces_partition_heal_and_clock_skew(tmp_path, fleet, hub_process):
    run_fleet(tmp_path, fleet, hub_process, partition=4.0)


def test_partition_longer_than_the_agents_request_timeout(tmp_path, fleet, hub_process):
    """70 s down: the request in flight times out (60 s), the agent retries on new connections
    with backoff, and after the heal everything still arrives once and in order."""
    run_fleet(tmp_path, fleet, hub_process, partition=70.0)


def run_fleet(tmp_path, fleet, hub_process, partition: float) -> None:
    port = free_port()
    h = hub_process(port=port)
    h.proc = Proc([sys.executable, "-m", "hub", "serve", "--data-dir", str(h.data_dir),
                   "--listen", f"{fleet.hub_ip}:{port}"], tmp_path / "hub.log")
    wait_for(lambda: h.proc.alive() and subprocess.run(
        ["bash", "-c", f"exec 3<>/dev/tcp/{fleet.hub_ip}/{port}"], capture_output=True).returncode == 0,
        30, what="hub listening on the bridge")
    url = f"http://{fleet.hub_ip}:{port}"

    agents: list[tuple[str, Proc, Path]] = []
    skewed = "node1"
    try:
        for i in range(N_AGENTS):
            name = f"node{i}"
            ns = fleet.add_node(i)
            state, watched = tmp_path / name, tmp_path / f"{name}-watched"
            watched.mkdir()
            token = h.enroll(name)
            r = subprocess.run(in_ns(ns, sys.executable, "-m", "agent", "join", url, token, "--state-dir", str(state)),
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            env = {"HOMELAB_AGENT_HEARTBEAT": "1s"}
            if name == skewed:
                env["HOMELAB_AGENT_CLOCK_OFFSET"] = "-300"  # this node's clock is 5 minutes slow
            p = Proc(in_ns(ns, sys.executable, "-m", "agent", "run", "--state-dir", str(state),
                           "--collectors", "files", "--watch", str(watched)),
                     tmp_path / f"{name}.log", env)
            agents.append((name, p, watched))

        def write(watched: Path, n: int) -> None:
            (watched / f"f{n:03d}.conf").write_text(f"change {n}\n")

        # all ingest (keep writing until each node's first change has arrived: the watch
        # starts a moment after the process does)
        counter = {name: 0 for name, _, _ in agents}

        def all_ingested() -> bool:
            done = True
            for name, _p, watched in agents:
                if not h.query("SELECT count(*) FROM file_changes WHERE node = ?", (name,))[0][0]:
                    write(watched, counter[name])
                    counter[name] += 1
                    done = False
            return done

        wait_for(all_ingested, 120, interval=0.5, what="every node's first file change")

        # partition node2 while it keeps producing
        victim, vp, vwatched = agents[2]
        vlink = fleet.links[2]
        start = counter[victim]

        def stored_paths() -> list[str]:
            rows = h.query("SELECT path FROM file_changes WHERE node = ? ORDER BY seq", (victim,))
            return list(dict.fromkeys(Path(r[0]).name for r in rows))  # first appearance, by seq

        last_pre = f"f{start - 1:03d}.conf"
        wait_for(lambda: last_pre in stored_paths(), 20, what="the victim's last change before the partition")

        quiet = {"v": None, "t": 0.0}

        def settled(state=quiet) -> bool:
            v = h.query("SELECT last_seq FROM nodes WHERE name = ?", (victim,))[0][0]
            if v != state["v"]:
                state["v"], state["t"] = v, time.monotonic()
            return time.monotonic() - state["t"] > 1.0

        wait_for(settled, 20, interval=0.2, what="the victim to go quiet before the partition")
        before = h.query("SELECT last_seq FROM nodes WHERE name = ?", (victim,))[0][0]
        ip("link", "set", vlink, "down")
        during = 25
        for n in range(start, start + during):
            write(vwatched, n)
            time.sleep(partition / during * 0.7)
        time.sleep(partition * 0.3)
        assert h.query("SELECT last_seq FROM nodes WHERE name = ?", (victim,))[0][0] == before, \
            "events crossed a link that is down"
        ip("link", "set", vlink, "up")
        total = start + during

        wanted = [f"f{n:03d}.conf" for n in range(start, total)]
        wait_for(lambda: set(wanted) <= set(stored_paths()), 90, interval=0.5,
                 what="the partitioned node's backlog")
        time.sleep(1.0)  # a duplicate, if any were sent, would have landed by now
        s = seqs(h, victim)
        assert s == list(range(1, len(s) + 1)), "sequence numbers are not contiguous and ordered"
        got = [p for p in stored_paths() if p in wanted]
        assert got == wanted, "the backlog arrived out of order"
        assert h.query("SELECT count(*) FROM events WHERE node = ?", (victim,))[0][0] == len(s)

        # every node's events are exactly once
        for name, _p, _w in agents:
            s = seqs(h, name)
            assert s == list(range(1, len(s) + 1)), name

        # clock skew: detected per node, reported by `homelab-hub nodes` and /metrics
        wait_for(lambda: h.query("SELECT clock_skew FROM nodes WHERE name = ?", (skewed,))[0][0] is not None, 10)
        r = subprocess.run([sys.executable, "-m", "hub", "nodes", "--json", "--data-dir", str(h.data_dir)],
                           capture_output=True, text=True, timeout=30)
        rows = {j["name"]: j for j in map(json.loads, r.stdout.splitlines())}
        assert -310 < rows[skewed]["clock_skew"] < -290
        for name in ("node0", "node2"):
            assert abs(rows[name]["clock_skew"]) < 5
        metrics = subprocess.run(["curl", "-s", f"{url}/metrics"], capture_output=True, text=True, timeout=10).stdout \
            if shutil.which("curl") else ""
        if metrics:
            line = next(ln for ln in metrics.splitlines()
                        if ln.startswith(f'homelab_node_clock_skew_seconds{{node="{skewed}"}}'))
            assert -310 < float(line.split()[-1]) < -290
        # ordering by sequence, not by clock: the hub stored the skewed node's events in seq order
        ids = h.query("SELECT seq FROM events WHERE node = ? ORDER BY id", (skewed,))
        assert [r[0] for r in ids] == sorted(r[0] for r in ids)
    finally:
        for _name, p, _w in agents:
            p.terminate()
        if h.proc:
            h.proc.terminate()
