"""The shipped SSH brute-force rule closes its loop on a real attack, with real processes.

A network namespace this test creates is the node: a real agent tails the auth log of a small
stand-in sshd there (it accepts a connection, writes sshd's "Failed password ... from ADDR"
line and hangs up). An attacker in a namespace of its own, linked to the node's, connects
several times a second. The hub (root namespace, on the link's address) evaluates the shipped
`ssh-brute-force` rule, copied under another name with its 10 minute window shortened to 30 s
so the test does not wait ten minutes (condition, extraction, `keep_firing_for: 30m` and the
candidate are the shipped ones). A person approves `block-address`; the agent runs it inside the
namespace (real nftables); the attacker's connections now fail, so no more lines come; one
window later the fix is "verified" because the rule's condition cleared on fresh data, while
the alert itself stays held open by `keep_firing_for` (the case that always read "not verified"
before). The hub's own address is not blocked: the agent keeps reporting.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import HubProcess, Proc, free_port, join_agent, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"),
                       reason="needs root, iproute2 and nftables"),
]

FAKE_SSHD = """
import socket, sys, time
addr, log = sys.argv[1], sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, 2222))
s.listen(64)
while True:
    c, (peer, port) = s.accept()
    stamp = time.strftime("%b %e %H:%M:%S")
    with open(log, "a") as f:
        f.write(f"{stamp} node1 sshd[4242]: Failed password for root from {peer} port {port} ssh2\\n")
    c.close()
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def hub_cli(data_dir, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60)


class LinkHub(HubProcess):
    """The hub on the link's address, so the node's namespace reaches it."""

    def __init__(self, data_dir: Path, host: str, port: int, log: Path):
        super().__init__(data_dir, port, log)
        self.host, self.url = host, f"http://{host}:{port}"

    def start(self) -> LinkHub:
        self.proc = Proc([sys.executable, "-m", "hub", "serve", "--data-dir", str(self.data_dir),
                          "--listen", f"{self.host}:{self.port}"], self.log)
        wait_for(self._ready, 30, what=f"hub on {self.url}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise AssertionError(f"hub exited: {self.proc.output()[-2000:]}")
        with socket.socket() as s:
            return s.connect_ex((self.host, self.port)) == 0


@pytest.fixture
def link():
    """A namespace for the node with a veth link to the hub (root side, NET.1; node NET.2),
    and one for the attacker with its own link to the node (node ATK.1; attacker ATK.2): an
    attacker on the hub's own machine would be one the guards rightly refuse to block."""
    tag = secrets.token_hex(3)
    ns, atk, root_end, ns_end = f"heal{tag}", f"healatk{tag}", f"healr{tag}", f"healn{tag}"
    a_node, a_atk = f"heala{tag}", f"healb{tag}"
    net = f"10.{180 + secrets.randbelow(20)}.{secrets.randbelow(250) + 1}"
    atk_net = f"10.{200 + secrets.randbelow(20)}.{secrets.randbelow(250) + 1}"
    ip("netns", "add", ns)
    ip("netns", "add", atk)
    try:
        ip("link", "add", root_end, "type", "veth", "peer", "name", ns_end)
        ip("link", "set", ns_end, "netns", ns)
        ip("addr", "add", f"{net}.1/24", "dev", root_end)
        ip("link", "set", root_end, "up")
        ip("-n", ns, "addr", "add", f"{net}.2/24", "dev", ns_end)
        ip("-n", ns, "link", "set", ns_end, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "add", a_node, "type", "veth", "peer", "name", a_atk)
        ip("-n", ns, "link", "set", a_atk, "netns", atk)
        ip("-n", ns, "addr", "add", f"{atk_net}.1/24", "dev", a_node)
        ip("-n", ns, "link", "set", a_node, "up")
        ip("-n", atk, "addr", "add", f"{atk_net}.2/24", "dev", a_atk)
        ip("-n", atk, "link", "set", a_atk, "up")
        yield ns, atk, net, atk_net
    finally:
        ip("link", "del", root_end, check=False)
        ip("netns", "del", atk, check=False)
        ip("netns", "del", ns, check=False)


def shipped_rule_for_test() -> str:
    text = (ROOT / "rules" / "ssh.yaml").read_text().replace("name: ssh-brute-force", "name: e2e-ssh-brute-force")
    assert text.count("aggregate: {fn: count, window: 10m}") == 1
    return text.replace("aggregate: {fn: count, window: 10m}", "aggregate: {fn: count, window: 30s}")


ATTACKER = """
import socket, sys, time
dst, log = sys.argv[1], sys.argv[2]
with open(log, "a", buffering=1) as out:
    for _ in range(2400):  # at most 10 minutes, a few times a second
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect((dst, 2222))
            out.write("ok\\n")
        except OSError:
            out.write("failed\\n")
        finally:
            s.close()
        time.sleep(0.25)
"""


class Attacker:
    """Connects to the node's sshd a few times a second from its own namespace; counts."""

    def __init__(self, ns: str, dst: str, log: Path):
        self.ns, self.dst, self.log = ns, dst, log
        self.proc: Proc | None = None

    def start(self) -> Proc:
        self.proc = Proc(["ip", "netns", "exec", self.ns, sys.executable, "-c", ATTACKER, self.dst,
                          str(self.log)], self.log.with_suffix(".err"))
        return self.proc

    def _count(self, word: str) -> int:
        return self.log.read_text().split().count(word) if self.log.exists() else 0

    @property
    def ok(self) -> int:
        return self._count("ok")

    @property
    def failed(self) -> int:
        return self._count("failed")


def test_brute_force_blocked_and_verified_while_the_alert_is_held(tmp_path, link, monkeypatch):
    ns, atk, net, atk_net = link
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "ssh.yaml").write_text(shipped_rule_for_test())
    for k in list(os.environ):
        if k.startswith("HOMELAB_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOMELAB_HUB_RULES_DIR", str(rules))
    monkeypatch.setenv("HOMELAB_MODEL", "none")
    monkeypatch.setenv("HOMELAB_HUB_VERIFY_WINDOW", "20")
    procs: list[Proc] = []
    attacker = Attacker(atk, f"{atk_net}.1", tmp_path / "attacker.log")
    try:
        hub = LinkHub(tmp_path / "hub", f"{net}.1", free_port(), tmp_path / "hub.log").start()
        procs.append(hub.proc)  # type: ignore[arg-type]
        state, auth_log = tmp_path / "agent", tmp_path / "auth.log"
        auth_log.touch()
        join_agent(hub.url, hub.enroll("node1"), state)
        procs.append(Proc(["ip", "netns", "exec", ns, sys.executable, "-c", FAKE_SSHD, "0.0.0.0", str(auth_log)],
                          tmp_path / "sshd.log"))
        procs.append(Proc(["ip", "netns", "exec", ns, sys.executable, "-m", "agent", "run", "--state-dir", str(state),
                           "--collectors", "logs", "--log-file", str(auth_log)], tmp_path / "agent.log",
                          {"HOMELAB_AGENT_HEARTBEAT": "1", "HOMELAB_AGENT_LOG_JOURNAL": "false"}))
        wait_for(lambda: hub.query("SELECT last_seen FROM nodes WHERE name = 'node1'")[0][0], 30, what="agent online")
        procs.append(attacker.start())

        # (the shipped rule fires on the same attack too; its own proposal just waits)
        pid = wait_for(lambda: hub.query("SELECT id FROM proposals WHERE playbook = 'block-address'"
                                         " AND rule = 'e2e-ssh-brute-force'"), 90,
                       what=f"a proposal (hub log: {hub.log}; agent log: {tmp_path / 'agent.log'})")[0][0]
        p = json.loads(hub_cli(hub.data_dir, "proposals", "show", str(pid), "--json").stdout)
        assert (p["state"], p["rule"], p["params"]) == ("proposed", "e2e-ssh-brute-force",
                                                        {"address": f"{atk_net}.2/32", "duration": "3600"})
        r = hub_cli(hub.data_dir, "approve", str(pid), "--yes")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: hub.query("SELECT state FROM proposals WHERE id = ?", (pid,))[0][0]
                 in ("verified", "not verified", "failed"), 120, what="the block to run and be judged")
        state_, reason, output = hub.query("SELECT state, reason, output FROM proposals WHERE id = ?", (pid,))[0]
        assert state_ == "verified", (state_, reason, output)
        note = hub.query("SELECT note FROM proposal_transitions WHERE proposal_id = ? AND to_state = 'verified'",
                         (pid,))
        assert note == [("the rule's condition cleared on data since the fix",)]
        # held open by keep_firing_for (30m): the alert did not decide, the condition did
        assert hub.query("SELECT a.state FROM alerts a JOIN proposals p ON p.alert_id = a.id WHERE p.id = ?",
                         (pid,)) == [("firing",)]
        # the block is real: the attacker's connections fail now; the node still reports
        failed = attacker.failed
        wait_for(lambda: attacker.failed > failed + 2, 30, what="the attacker's connections to fail")
        ok = attacker.ok
        time.sleep(1.0)
        assert attacker.ok == ok
        seen = hub.query("SELECT last_seen FROM nodes WHERE name = 'node1'")[0][0]
        wait_for(lambda: hub.query("SELECT last_seen FROM nodes WHERE name = 'node1'")[0][0] > seen, 30,
                 what="the agent to keep reporting")
        v = hub_cli(hub.data_dir, "audit", "verify")
        assert v.returncode == 0 and "intact" in v.stdout, v.stderr
    finally:
        for p_ in reversed(procs):
            p_.terminate()
