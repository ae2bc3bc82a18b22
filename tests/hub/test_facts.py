"""Facts snapshots (any collector's current state) through the real hub ingest into
``twin_facts`` and ``twin_fact_changes``; and the sockets collector that uses them, from a
real agent process watching real listening sockets."""

from __future__ import annotations

import json
import socket

from agent import wire
from agent.collectors.sockets import snapshot
from tests.conftest import join_agent, wait_for
from tests.hub.test_activity import join, post

T = 1_700_000_000.0


def facts(ts: float, items: dict) -> wire.Facts:
    return wire.Facts(ts=ts, source="sockets", items=items)


A = {"proto": "tcp", "port": 22, "process": "sshd"}
B = {"proto": "tcp", "port": 80, "process": "nginx"}


async def test_snapshots_become_current_state_and_a_history_of_differences(hub):
    cred = await join(hub)
    # a baseline, then: B added, A changed; then A removed; two snapshots in one batch diff
    # against each other, not both against the stored state
    status, _ = await post(hub, cred, "n1", [(1, facts(T, {"tcp :22": A}))])
    assert status == 200
    assert hub.query("SELECT count(*) FROM twin_fact_changes") == [(0,)]
    moved = {**A, "process": "dropbear"}
    status, _ = await post(hub, cred, "n1", [
        (2, facts(T + 60, {"tcp :22": moved, "tcp :80": B})),
        (3, facts(T + 120, {"tcp :80": B})),
    ])
    assert status == 200
    current = {k: json.loads(v) for k, v in hub.query(
        "SELECT key, value FROM twin_facts WHERE node = 'n1' AND source = 'sockets' AND key != ''")}
    assert current == {"tcp :80": B}
    changes = hub.query("SELECT seq, key, change, value, old_value FROM twin_fact_changes ORDER BY id")
    assert [(s, k, c) for s, k, c, _v, _o in changes] == [
        (2, "tcp :22", "changed"), (2, "tcp :80", "added"), (3, "tcp :22", "removed")]
    assert json.loads(changes[0][4]) == A and json.loads(changes[0][3]) == moved
    # every port closed, then one opens: still reported (the source has reported before)
    await post(hub, cred, "n1", [(4, facts(T + 180, {})), (5, facts(T + 240, {"tcp :22": A}))])
    assert hub.query("SELECT seq, change FROM twin_fact_changes WHERE seq >= 4 ORDER BY id") == [
        (4, "removed"), (5, "added")]
    assert hub.query("SELECT updated FROM twin_facts WHERE key = ''") == [(T + 240,)]


async def test_a_malformed_snapshot_is_refused_by_name_and_nothing_is_stored(hub):
    cred = await join(hub)
    bad = wire.Facts(ts=T, source="Bad Source!", items={"k": {}})
    status, body = await post(hub, cred, "n1", [(1, bad)])
    assert status == 400 and "source" in body["error"], body
    assert hub.query("SELECT count(*) FROM twin_facts") == [(0,)]


def test_sockets_snapshot_sees_this_process_listening_and_not_after_close():
    import os
    import pwd

    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.bind(("::1", 0))
    tcp_key = f"tcp 127.0.0.1:{tcp.getsockname()[1]}"
    udp_key = f"udp6 [::1]:{udp.getsockname()[1]}"
    client = socket.create_connection(tcp.getsockname())  # connected: not a listener
    try:
        items = snapshot()
        me = pwd.getpwuid(os.getuid()).pw_name
        for key in (tcp_key, udp_key):
            assert items[key]["pid"] == os.getpid() and items[key]["user"] == me, items[key]
        assert items[udp_key]["address"] == "::1"
        assert not any(v["port"] == client.getsockname()[1] for v in items.values())
    finally:
        client.close()
        tcp.close()
        udp.close()
    after = snapshot()
    assert tcp_key not in after and udp_key not in after


def test_a_real_agent_reports_a_port_opening_and_closing(tmp_path, hub_process, agent_process):
    h = hub_process().start()
    join_agent(h.url, h.enroll("n1"), tmp_path / "agent")
    agent_process(tmp_path / "agent", "--collectors", "sockets",
                  env={"HOMELAB_AGENT_PROCESSES_INTERVAL": "1"})
    hub_key = f"tcp 127.0.0.1:{h.port}"
    wait_for(lambda: h.query("SELECT value FROM twin_facts WHERE key = ?", (hub_key,)),
             timeout=60, what="the hub's own listening port in the twin")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    probe.listen()
    key = f"tcp 127.0.0.1:{probe.getsockname()[1]}"
    try:
        rows = wait_for(lambda: h.query("SELECT value FROM twin_fact_changes WHERE key = ?"
                                        " AND change = 'added'", (key,)),
                        timeout=60, what="the new port reported as added")
        assert json.loads(rows[0][0])["process"].startswith("python")
    finally:
        probe.close()
    wait_for(lambda: h.query("SELECT 1 FROM twin_fact_changes WHERE key = ? AND change = 'removed'",
                             (key,)), timeout=60, what="the closed port reported as removed")


def test_twin_shows_every_facts_source(tmp_path):
    from click.testing import CliRunner

    from hub.store import open_db
    from hub.twin.cli import twin
    from hub.twin.facts import apply_snapshot

    db = open_db(tmp_path / "homelab.db")
    db.execute("INSERT INTO nodes (name, created) VALUES ('nas01', 1)")
    apply_snapshot(db, "nas01", 1, T, "sockets", {"tcp 0.0.0.0:22": json.dumps(
        {"proto": "tcp", "port": 22, "process": "sshd", "pid": None})})
    db.close()
    out = CliRunner(env={"COLUMNS": "80"}).invoke(twin, ["nas01", "--data-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "Sockets: 1" in out.output and "tcp 0.0.0.0:22" in out.output and "process=sshd" in out.output
    as_json = CliRunner().invoke(twin, ["nas01", "--json", "--data-dir", str(tmp_path)])
    assert json.loads(as_json.output)["facts"]["sockets"]["tcp 0.0.0.0:22"]["process"] == "sshd"
