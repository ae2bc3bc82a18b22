"""OpenSSL stays out of a real agent that never speaks TLS, and comes back when it does."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from agent.config import AGENT_OPTS
from agent.settings import load
from agent.tls import openssl_needed
from tests.conftest import join_agent, wait_for


def openssl_mapped(pid: int) -> list[str]:
    """The OpenSSL libraries mapped into a process (what its resident memory pays for)."""
    return sorted({line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                   if "libcrypto" in line or "libssl" in line})


def settings(tmp_path: Path, **env: str):
    return load(AGENT_OPTS, {"state_dir": tmp_path}, None, env)


def test_openssl_is_needed_only_for_tls(tmp_path):
    assert openssl_needed(settings(tmp_path, HOMELAB_AGENT_HUB_URL="http://hub:8700")) is None
    assert openssl_needed(settings(tmp_path, HOMELAB_AGENT_HUB_URL="https://hub:8700"))
    check = json.dumps([{"name": "web", "type": "tcp", "target": "127.0.0.1:1"}])
    assert openssl_needed(settings(tmp_path, HOMELAB_AGENT_HUB_URL="http://hub", HOMELAB_AGENT_CHECKS=check))
    assert openssl_needed(settings(tmp_path, HOMELAB_AGENT_HUB_URL="http://hub", HOMELAB_AGENT_CHECKS=check,
                                   HOMELAB_AGENT_COLLECTORS="metrics")) is None
    (tmp_path / "hub.crt").write_text("pinned")
    assert openssl_needed(settings(tmp_path, HOMELAB_AGENT_HUB_URL="http://hub"))


@pytest.mark.parametrize("optimize", ["", "2"])  # "2": as systemd/homelab-agent.service runs it
def test_an_agent_with_a_plain_http_hub_runs_and_hashes_without_openssl(tmp_path, hub_process, agent_process, optimize):
    hub = hub_process().start()
    state, watched = tmp_path / "agent", tmp_path / "etc"
    watched.mkdir()
    join_agent(hub.url, hub.enroll("n1"), state)
    # every default collector: those that step aside here must still load without ssl (and
    # without docstrings and asserts)
    a = agent_process(state, "--watch", str(watched), env={"PYTHONOPTIMIZE": optimize})
    wait_for(lambda: hub.query("SELECT 1 FROM events WHERE node = 'n1' AND kind = 'metrics'"), 30,
             what="metrics at the hub")
    time.sleep(1)
    (watched / "app.conf").write_text("port = 8080\n")
    want = hashlib.sha256(b"port = 8080\n").hexdigest()
    wait_for(lambda: hub.query("SELECT 1 FROM events_full WHERE kind = 'file' AND json_extract(data, '$.sha256') = ?",
                               (want,)), 30, what="the file change, hashed, at the hub")
    assert openssl_mapped(a.p.pid) == []
    assert "cannot load" not in a.output() and "Traceback" not in a.output()


def test_an_agent_with_checks_keeps_openssl(tmp_path, hub_process, agent_process):
    hub = hub_process().start()
    state = tmp_path / "agent"
    join_agent(hub.url, hub.enroll("n1"), state)
    check = json.dumps([{"name": "hub", "type": "tcp", "target": f"127.0.0.1:{hub.port}", "interval": 1}])
    a = agent_process(state, "--collectors", "checks", env={"HOMELAB_AGENT_CHECKS": check})
    wait_for(lambda: hub.query("SELECT 1 FROM events WHERE node = 'n1' AND kind = 'check'"), 30,
             what="a check result at the hub")
    assert openssl_mapped(a.p.pid)
