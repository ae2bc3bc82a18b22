"""End to end with real processes: an agent tails an auth log, the hub's shipped SSH rule
fires per attacking address and proposes the expiring block."""

from __future__ import annotations

import json
import time

from tests.conftest import join_agent, wait_for


def syslog(msg: str, pid: int = 2200) -> str:
    return f"{time.strftime('%b %e %H:%M:%S')} gw sshd[{pid}]: {msg}\n"


def test_agent_tailing_auth_log_to_ssh_alert(tmp_path, hub_process, agent_process, monkeypatch):
    for k in ("HOMELAB_HUB_RULES_DIR", "HOMELAB_HUB_WEBHOOKS", "HOMELAB_HUB_ALERTMANAGER_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOMELAB_MODEL", "none")  # the rule's own choice stands
    hub = hub_process().start()
    state = tmp_path / "agent"
    join_agent(hub.url, hub.enroll("gw"), state)
    auth = tmp_path / "auth.log"
    auth.write_text(syslog("Server listening on 0.0.0.0 port 22."))
    agent_process(state, "--collectors", "logs", "--log-file", str(auth))

    def logged(marker: str) -> bool:
        return bool(hub.query("SELECT 1 FROM events_full WHERE kind = 'log' AND json_extract(data, '$.message') = ?",
                              (marker,)))

    # the agent reads a new file from its end: keep marking until it is following
    deadline = time.monotonic() + 30
    n = 0
    while not logged(f"marker {n}"):
        assert time.monotonic() < deadline, "the agent never shipped the marker line"
        n += 1
        with auth.open("a") as f:
            f.write(syslog(f"marker {n}"))
        time.sleep(0.5)
    with auth.open("a") as f:
        f.write(syslog("Failed password for alice from 192.168.1.20 port 40022 ssh2", 3000))
        f.write(syslog("Failed password for alice from 192.168.1.20 port 40022 ssh2", 3000))
        f.write(syslog("Accepted password for alice from 192.168.1.20 port 40022 ssh2", 3000))
        for i in range(12):
            f.write(syslog(f"Failed password for invalid user admin{i} from 203.0.113.77 port {50000 + i} ssh2", 3100 + i))

    rows = wait_for(lambda: hub.query("SELECT node, state, fields, propose, count FROM alerts WHERE rule = 'ssh-brute-force'"),
                    60, what="ssh-brute-force alert")
    (node, state, fields, propose, count), = rows
    assert node == "gw" and state == "firing" and json.loads(fields)["address"] == "203.0.113.77"
    assert json.loads(propose)[0] == {"playbook": "block-address", "params": {"address": "203.0.113.77", "duration": "1h"},
                                      "auto": False}
    assert count >= 10
    # the proposals side picked the candidate up (its own table; the link is alert_id)
    wait_for(lambda: hub.query("SELECT playbook FROM proposals WHERE alert_id = (SELECT id FROM alerts"
                               " WHERE rule = 'ssh-brute-force')"), 30, what="a proposal linked to the alert")
    assert not hub.query("SELECT 1 FROM alerts WHERE json_extract(fields, '$.address') = '192.168.1.20'")
