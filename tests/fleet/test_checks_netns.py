"""Active checks in the node lab: a web server in one network namespace, the agent that checks
it in another, the hub on a bridge in the root namespace. The server's link goes down (the
check fails from where it runs, and check-down goes pending) and comes back (it recovers)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys

import pytest
from fleetlib import Proc, enroll, free_port, query, wait_for

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2"),
]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


class Lab:
    """A bridge and two namespaces, every name prefixed ``peers`` and tagged, removed after."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.bridge = f"peersb{self.tag}"
        self.prefix = f"10.{150 + secrets.randbelow(40)}.{secrets.randbelow(250) + 1}"
        self.hub_ip = f"{self.prefix}.1"
        self.namespaces: list[str] = []
        self.links: dict[str, str] = {}  # namespace -> root-side veth end

    def up(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.hub_ip}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add(self, i: int) -> tuple[str, str]:
        ns, root_end, ns_end = f"peersn{self.tag}{i}", f"peersv{self.tag}{i}", f"peersp{self.tag}{i}"
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("link", "add", root_end, "type", "veth", "peer", "name", ns_end)
        self.links[ns] = root_end
        ip("link", "set", ns_end, "netns", ns)
        ip("link", "set", root_end, "master", self.bridge)
        ip("link", "set", root_end, "up")
        addr = f"{self.prefix}.{i + 10}"
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", ns_end)
        ip("-n", ns, "link", "set", ns_end, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        return ns, addr

    def teardown(self) -> None:
        for link in self.links.values():
            ip("link", "del", link, check=False)
        for ns in self.namespaces:
            ip("netns", "del", ns, check=False)
        ip("link", "del", self.bridge, check=False)


@pytest.fixture
def lab():
    lab = Lab()
    try:
        lab.up()
        yield lab
    finally:
        lab.teardown()
        assert lab.tag not in ip("netns", "list").stdout, "namespaces left behind"


def listening(p: Proc, host: str, port: int) -> bool:
    assert p.alive(), p.output()[-2000:]
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def check_row(data_dir, name: str):
    rows = query(data_dir, "SELECT ok, error, since FROM checks WHERE node = 'mon' AND name = ?", (name,))
    return rows[0] if rows else None


def test_a_check_runs_where_the_target_is_reachable_and_sees_it_go_down_and_back(tmp_path, lab):
    web_ns, web_ip = lab.add(0)
    mon_ns, _ = lab.add(1)
    data_dir, port = tmp_path / "hub", free_port()
    hub = Proc([sys.executable, "-m", "hub", "serve", "--data-dir", str(data_dir), "--listen",
                f"{lab.hub_ip}:{port}"], tmp_path / "hub.log", {"HOMELAB_MODEL": "none"})
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("all systems nominal\n")
    web = Proc(["ip", "netns", "exec", web_ns, sys.executable, "-m", "http.server", "8080", "--bind", web_ip,
                "--directory", str(site)], tmp_path / "web.log")
    agent = None
    try:
        wait_for(lambda: listening(hub, lab.hub_ip, port), 60, what="the hub on the bridge")
        state = tmp_path / "mon"
        r = subprocess.run(["ip", "netns", "exec", mon_ns, sys.executable, "-m", "agent", "join",
                            f"http://{lab.hub_ip}:{port}", enroll(data_dir, "mon"), "--state-dir", str(state)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr + hub.output()[-2000:]
        checks = [{"name": "site", "type": "http", "target": f"http://{web_ip}:8080/",
                   "expect_text": "nominal", "interval": 1, "timeout": 2},
                  {"name": "site-port", "type": "tcp", "target": f"{web_ip}:8080", "interval": 1, "timeout": 2}]
        agent = Proc(["ip", "netns", "exec", mon_ns, sys.executable, "-m", "agent", "run", "--state-dir",
                      str(state), "--collectors", "checks"], tmp_path / "agent.log",
                     {"HOMELAB_AGENT_CHECKS": json.dumps(checks)})
        wait_for(lambda: (check_row(data_dir, "site") or (0,))[0] == 1
                 and (check_row(data_dir, "site-port") or (0,))[0] == 1, 60, what="both checks up")
        # the web node drops off the network: from mon the checks fail
        ip("link", "set", lab.links[web_ns], "down")
        wait_for(lambda: (check_row(data_dir, "site") or (1,))[0] == 0, 60, what="site down")
        assert check_row(data_dir, "site")[1]  # with the reason
        wait_for(lambda: query(data_dir, "SELECT 1 FROM alerts WHERE rule = 'check-down' AND node = 'mon'"
                                         " AND state = 'pending'"), 60, what="check-down pending")
        ip("link", "set", lab.links[web_ns], "up")
        wait_for(lambda: (check_row(data_dir, "site") or (0,))[0] == 1, 60, what="site back up")
    finally:
        if agent is not None:
            agent.terminate()
        web.terminate()
        hub.terminate()
    history = [ok for (ok,) in query(data_dir, "SELECT ok FROM check_results WHERE node = 'mon'"
                                              " AND name = 'site' ORDER BY ts")]
    assert history[0] == 1 and 0 in history and history[-1] == 1
