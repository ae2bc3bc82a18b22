"""Finding 5: the hub's files are private whatever the umask, and Datasette answers only
requests addressed to this machine and never shows credential hashes or job outputs unless
the administrator asks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest
from seclib import root

from hub.config import load_settings
from hub.server import datasette_argv


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_data_dir_and_database_are_private_whatever_the_umask(tmp_path):
    data = tmp_path / "a" / "hub"
    r = subprocess.run([sys.executable, "-c", "import os, sys; os.umask(0); from hub.cli import main; sys.argv = "
                        f"['homelab-hub', 'enroll', 'n1', '--data-dir', {str(data)!r}]; main()"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert mode(data) == 0o700
    db = data / "homelab.db"
    assert mode(db) == 0o600
    for suffix in ("-wal", "-shm"):
        if (data / f"homelab.db{suffix}").exists():
            assert mode(data / f"homelab.db{suffix}") == 0o600, suffix


def test_an_existing_world_readable_database_is_tightened(tmp_path):
    from hub.store import open_db

    data = tmp_path / "hub"
    open_db(data / "homelab.db").close()
    os.chmod(data / "homelab.db", 0o644)
    open_db(data / "homelab.db").close()
    assert mode(data / "homelab.db") == 0o600


def get(url: str, host: str | None = None, sql: str | None = None) -> tuple[int, object]:
    if sql is not None:
        url += "?" + urllib.parse.urlencode({"sql": sql, "_shape": "array"})
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:  # not listening yet
        return 0, None


@pytest.fixture
def secret_db(tmp_path, monkeypatch):
    for k in [k for k in os.environ if k.startswith("HOMELAB_")]:
        monkeypatch.delenv(k)
    from hub import auth
    from hub.store import open_db

    data = tmp_path / "hub"
    db = open_db(data / "homelab.db")
    db.execute("BEGIN IMMEDIATE")
    token = auth.enroll(db, "n1", 3600)
    auth.redeem(db, token, "127.0.0.1")
    auth.enroll(db, "n2", 3600)
    db.execute("INSERT INTO jobs (id, node, proposal_id, mode, playbook, payload, signature, state, created, expires,"
               " output) VALUES ('job_1', 'n1', NULL, 'check', 'write-file', '{}', 'sig', 'succeeded', 1, 2,"
               " 'db_password=HUNTER2')")
    db.execute("INSERT INTO events (node, seq, ts, kind, data) VALUES ('n1', 1, 1, 'job_result', ?)",
               ('{"kind":"job_result","job_id":"job_1","status":"succeeded","output":"db_password=HUNTER2"}',))
    db.execute("INSERT INTO events (node, seq, ts, kind, data) VALUES ('n1', 2, 2, 'log', '{\"message\":\"hi\"}')")
    # a log line as stored now: once, in logs; its events row keeps kind and time
    db.execute("INSERT INTO events (node, seq, ts, kind, data) VALUES ('n1', 3, 3, 'log', '{\"kind\":\"log\",\"ts\":3.0}')")
    db.execute("INSERT INTO logs (node, seq, ts, source, message) VALUES ('n1', 3, 3.0, 'journald', 'once')")
    db.execute("COMMIT")
    db.close()
    return data


def start_datasette(data, tmp_path, env=None):
    port = root.free_port()
    argv = datasette_argv(load_settings(data_dir=data), port)
    p = root.Proc(argv, tmp_path / f"ds-{port}.log", env=env)
    base = f"http://127.0.0.1:{port}"
    root.wait_for(lambda: not p.alive() or get(f"{base}/-/versions.json")[0] == 200, 60, what="datasette")
    assert p.alive(), p.output()
    return p, base, port


def test_datasette_hides_credentials_and_job_output(secret_db, tmp_path):
    p, base, port = start_datasette(secret_db, tmp_path)
    try:
        for sql in ("select credential_hash as c from nodes where name = 'n1'",
                    "select token_hash as c from join_tokens",
                    "select output as c from jobs",
                    "select (select credential_hash from nodes limit 1) || 'x' as c",
                    "with t as (select * from nodes) select credential_hash as c from t"):
            status, rows = get(f"{base}/homelab.json", sql=sql)
            assert status == 200, rows
            assert rows and all(r["c"] in (None, "") for r in rows), (sql, rows)
        status, rows = get(f"{base}/homelab/nodes.json?_shape=array")
        assert status == 200 and {r["name"] for r in rows} == {"n1", "n2"}
        assert all(r["credential_hash"] is None for r in rows)
        status, rows = get(f"{base}/homelab/jobs.json?_shape=array")
        assert status == 200 and rows[0]["output"] is None and rows[0]["playbook"] == "write-file"
        # the same output inside the job_result event: gone from the table page and from SQL
        status, rows = get(f"{base}/homelab/events.json?_shape=array&kind=job_result")
        assert status == 200 and len(rows) == 1 and "HUNTER2" not in str(rows), rows
        assert '"status":"succeeded"' in rows[0]["data"]
        for sql in ("select data from events", "select data from main.events",
                    "select json_extract(data, '$.output') as o from events",
                    "select data from events_full", "select data from main.events_full",
                    "select json_extract(data, '$.output') as o from main.events_full"):
            status, rows = get(f"{base}/homelab.json", sql=sql)
            assert status == 200 and "HUNTER2" not in str(rows), (sql, rows)
        status, rows = get(f"{base}/homelab.json", sql="select data from events where kind = 'log' order by seq")
        assert rows == [{"data": '{"message":"hi"}'},
                        {"data": '{"kind":"log","source":"journald","message":"once","ts":3.0}'}]
        status, rows = get(f"{base}/homelab.json", sql="select data from events_full where seq = 3")
        assert rows == [{"data": '{"kind":"log","source":"journald","message":"once","ts":3.0}'}]
    finally:
        p.terminate()
    # the administrator asks: then they are there
    p, base, _ = start_datasette(secret_db, tmp_path, env={"HOMELAB_HUB_DATASETTE_PRIVATE": "1"})
    try:
        status, rows = get(f"{base}/homelab.json", sql="select output as c from jobs")
        assert rows == [{"c": "db_password=HUNTER2"}]
        status, rows = get(f"{base}/homelab.json", sql="select json_extract(data, '$.output') as o from events"
                                                       " where kind = 'job_result'")
        assert rows == [{"o": "db_password=HUNTER2"}]
        status, rows = get(f"{base}/homelab.json", sql="select json_extract(data, '$.message') as m from events"
                                                       " where seq = 3")
        assert rows == [{"m": "once"}]
    finally:
        p.terminate()


def test_datasette_answers_only_its_own_host_names(secret_db, tmp_path):
    p, base, port = start_datasette(secret_db, tmp_path)
    try:
        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", "localhost.evil:80"):
            status, body = get(f"{base}/homelab/nodes.json", host=host)
            assert status == 421, (host, status)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"LOCALHOST.:{port}"):
            status, _ = get(f"{base}/homelab/nodes.json", host=host)
            assert status == 200, host
    finally:
        p.terminate()
