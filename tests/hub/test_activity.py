"""Log lines and commands through the real hub ingest into ``logs``/``commands``, their
full-text search, retention; and the whole path from a real shell and a real log file."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

from agent import wire
from hub.rollup import expire_history as expire
from tests.conftest import join_agent, wait_for


async def join(hub, name="n1") -> str:
    token = hub.enroll(name)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{hub.url}/v1/join", json={"token": token}) as r:
            assert r.status == 200, await r.text()
            return (await r.json())["credential"]


async def post(hub, cred: str, node: str, events: list[tuple[int, wire.Event]]):
    body = wire.encode_batch(node, time.time(), [(s, wire.encode_event(e)) for s, e in events])
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {cred}"}) as s:
        async with s.post(f"{hub.url}/v1/ingest", data=io.BytesIO(body)) as r:
            return r.status, await r.json()


T = 1_700_000_000.0
LOGS = [
    wire.Log(ts=T, source="/var/log/auth.log", message="Failed password for root from 10.0.0.9 port 2222 ssh2",
             program="sshd", pid=811, severity=4, facility="authpriv", host="nas"),
    wire.Log(ts=T + 1, source="journald", message="nginx.service: Main process exited, code=exited, status=1/FAILURE",
             program="systemd", pid=1, severity=3, unit="nginx.service"),
    wire.Log(ts=T + 2, source="/var/log/syslog", message="(root) CMD (run-parts /etc/cron.hourly)", program="CRON", pid=99),
    wire.Log(ts=T + 3, source="/var/log/app.log", message="odd severity from a buggy agent", severity=12),
]
COMMANDS = [
    wire.Command(ts=T + 10, command="vim /etc/nginx/nginx.conf", cwd="/root", user="root", tty="/dev/pts/0",
                 exit_code=0, duration_ms=51234, shell="bash"),
    wire.Command(ts=T + 20, command="systemctl reload nginx", cwd="/etc/nginx", user="root", exit_code=1,
                 duration_ms=40, shell="bash"),
    wire.Command(ts=T + 30, command="export API_TOKEN=[REDACTED]", cwd="/home/alice", user="alice",
                 exit_code=0, duration_ms=0, shell="zsh", redacted=True),
    wire.Command(ts=T + 40, command="ls", cwd="/etc/nginx/sites-enabled", user="alice", exit_code=0, shell="zsh"),
]


async def test_rows_and_full_text_search(hub):
    cred = await join(hub)
    events = [(i + 1, e) for i, e in enumerate(LOGS + COMMANDS)]
    assert (await post(hub, cred, "n1", events))[0] == 200
    assert (await post(hub, cred, "n1", events))[1]["duplicates"] == len(events)  # replay: no new rows
    q = hub.query
    assert q("SELECT seq, program, pid, severity, facility, host, unit FROM logs ORDER BY seq") == [
        (1, "sshd", 811, 4, "authpriv", "nas", None),
        (2, "systemd", 1, 3, None, None, "nginx.service"),
        (3, "CRON", 99, None, None, None, None),
        (4, None, None, None, None, None, None),  # severity 12 does not fit: NULL, batch kept
    ]
    assert q("SELECT severity FROM log_lines WHERE program = 'sshd'") == [("warning",)]
    # full text on log messages (unicode61: words, phrases, prefixes)
    assert q("SELECT l.program FROM logs_fts JOIN logs l ON l.id = logs_fts.rowid"
             " WHERE logs_fts MATCH 'password AND root'") == [("sshd",)]
    assert q("SELECT l.seq FROM logs_fts JOIN logs l ON l.id = logs_fts.rowid"
             " WHERE logs_fts MATCH '\"10.0.0.9\"'") == [(1,)]
    assert q("SELECT count(*) FROM logs_fts WHERE logs_fts MATCH 'fail*'") == [(2,)]
    # commands: which touched a path (in the command line or as the working directory)
    touched = q("SELECT c.command FROM commands_fts JOIN commands c ON c.id = commands_fts.rowid"
                " WHERE commands_fts MATCH '\"/etc/nginx\"' ORDER BY c.ts")
    assert touched == [("vim /etc/nginx/nginx.conf",), ("systemctl reload nginx",), ("ls",)]
    assert q("SELECT user, exit_code, duration_ms, redacted, shell FROM command_history ORDER BY ts") == [
        ("root", 0, 51234, 0, "bash"), ("root", 1, 40, 0, "bash"),
        ("alice", 0, 0, 1, "zsh"), ("alice", 0, None, 0, "zsh")]
    # the indexes the common questions use
    plan = " ".join(r[3] for r in q("EXPLAIN QUERY PLAN SELECT * FROM logs WHERE node = 'n1' AND program = 'sshd' AND ts > 0"))
    assert "logs_node_program_ts" in plan
    plan = " ".join(r[3] for r in q("EXPLAIN QUERY PLAN SELECT * FROM commands WHERE user = 'root' ORDER BY ts DESC"))
    assert "commands_user_ts" in plan


async def test_datasette_finds_the_search_tables(hub):
    from datasette.utils import detect_fts

    cred = await join(hub)
    await post(hub, cred, "n1", [(1, LOGS[0]), (2, COMMANDS[0])])
    db = sqlite3.connect(hub.data_dir / "homelab.db")
    try:
        assert detect_fts(db, "logs") == "logs_fts"
        assert detect_fts(db, "commands") == "commands_fts"
    finally:
        db.close()


async def test_retention_keeps_the_index_in_step(hub):
    cred = await join(hub)
    old = [(i + 1, wire.Log(ts=T + i, source="f", message=f"ancient line {i}")) for i in range(5)]
    new = [(6, wire.Log(ts=time.time(), source="f", message="fresh line")),
           (7, wire.Command(ts=T, command="rm -rf /tmp/old", user="root")),
           (8, wire.Command(ts=time.time(), command="uptime", user="root"))]
    assert (await post(hub, cred, "n1", old + new))[0] == 200
    more = await hub.writer.run(lambda db: expire(db, time.time() - 86400))
    assert more is False
    assert hub.query("SELECT message FROM logs") == [("fresh line",)]
    assert hub.query("SELECT command FROM commands") == [("uptime",)]
    assert hub.query("SELECT count(*) FROM logs_fts WHERE logs_fts MATCH 'line'") == [(1,)]
    assert hub.query("SELECT count(*) FROM commands_fts WHERE commands_fts MATCH 'tmp'") == [(0,)]
    # the FTS index agrees with its table
    db = sqlite3.connect(hub.data_dir / "homelab.db")
    try:
        db.execute("INSERT INTO logs_fts (logs_fts, rank) VALUES ('integrity-check', 1)")
        db.execute("INSERT INTO commands_fts (commands_fts, rank) VALUES ('integrity-check', 1)")
    finally:
        db.close()


# --- the whole path: a real shell and a real log file on a real agent --------------------


@pytest.mark.skipif(not shutil.which("logger"), reason="util-linux logger is not installed")
def test_shell_and_log_file_to_hub_tables(tmp_path, hub_process, agent_process):
    from tests.agent.test_commands import Shell, hook_file, shell_env

    hub = hub_process().start()
    state = tmp_path / "agent"
    join_agent(hub.url, hub.enroll("n1"), state)
    sockdir = Path(tempfile.mkdtemp(prefix="hla-", dir="/tmp"))
    try:
        sock = sockdir / "c.sock"
        log = tmp_path / "app.log"
        log.write_text("")
        agent_process(state, "--collectors", "commands,logs", "--log-file", str(log),
                      env={"HOMELAB_AGENT_SOCKET": str(sock)})
        wait_for(lambda: sock.exists(), 30, what="the agent's command socket")
        hook = hook_file(tmp_path, "bash", sock)
        sh = Shell(["bash", "--norc", "--noprofile", "-i"], shell_env(tmp_path))
        try:
            sh.run(f". {hook}")
            sh.run("cd /tmp && ls >/dev/null")
            sh.run("curl -s -u admin:hunter2 http://127.0.0.1:9/ ; true")
            sh.run(f"echo '<11>1 2025-01-01T00:00:00Z nas backup 42 - - disk full' >> {log}")
        finally:
            sh.close()
        wait_for(lambda: hub.query("SELECT count(*) FROM commands")[0][0] >= 4, 30, what="commands at the hub")
        rows = hub.query("SELECT command, user, redacted FROM commands ORDER BY ts")
        assert ("cd /tmp && ls >/dev/null", "root" if os.geteuid() == 0 else rows[0][1], 0) in rows
        curl = [r for r in rows if r[0].startswith("curl")]
        assert curl and "hunter2" not in curl[0][0] and curl[0][2] == 1
        assert not hub.query("SELECT 1 FROM events WHERE data LIKE '%hunter2%'")  # nowhere at all
        wait_for(lambda: hub.query("SELECT program, pid, severity, message FROM logs"), 30, what="the log line")
        assert hub.query("SELECT program, pid, severity, message FROM logs") == [("backup", 42, 3, "disk full")]
        assert hub.query("SELECT count(*) FROM commands_fts WHERE commands_fts MATCH '\"/tmp\"'")[0][0] >= 1
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
