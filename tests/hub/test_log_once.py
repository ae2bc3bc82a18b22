"""A log line is stored once: in ``logs`` (columns, indexes, full-text), with its ``events`` row
keeping kind and time; ``events_full`` gives back the event's JSON as the agent sent it."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import msgspec

from agent import wire
from hub.ingest import _json_of
from hub.store import IngestItem, Writer

LINES = [
    wire.Log(ts=1_700_000_000.25, source="journald", message="Accepted publickey for alice from 10.0.0.7",
             program="sshd", pid=812, severity=6, facility="auth", host="nas", unit="ssh.service"),
    wire.Log(ts=1_700_000_001.0, source="/var/log/syslog", message="disk \"sdb\" failing\nsecond line"),
    wire.Log(ts=1_700_000_002.0, source="/var/log/odd.log", message="severity nine", severity=9),
]


def _ingest(w: Writer, node: str, events: list) -> None:
    evs = [(i + 1, wire.encode_event(e)) for i, e in enumerate(events)]
    frame = wire.decode_batch(wire.encode_batch(node, 1_700_000_010.0, evs))
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()
        w.queue.put(IngestItem(node, frame, _json_of(frame), 0.0, None, fut, loop))
        loop.run_until_complete(fut)
    finally:
        loop.close()


def test_log_lines_stored_once_and_given_back_whole(tmp_path):
    w = Writer(tmp_path / "homelab.db")
    w.start()
    try:
        w.run_sync(lambda db: db.execute("INSERT INTO nodes (name, created) VALUES ('nas', 0)"))
        _ingest(w, "nas", LINES + [wire.Metrics(ts=1_700_000_003.0, samples={"cpu_percent": 1.0})])
        db = sqlite3.connect(tmp_path / "homelab.db")
        stored = [r[0] for r in db.execute("SELECT data FROM events WHERE kind = 'log' ORDER BY seq")]
        assert stored == ['{"kind":"log","ts":1700000000.25}', '{"kind":"log","ts":1700000001.0}',
                          '{"kind":"log","ts":1700000002.0,"severity":9}']  # what logs cannot hold
        assert db.execute("SELECT count(*) FROM logs").fetchone()[0] == 3
        # every field back, as the agent's own JSON (msgspec omits None fields)
        full = [json.loads(r[0]) for r in db.execute("SELECT data FROM events_full ORDER BY seq")]
        assert full[:3] == [json.loads(msgspec.json.encode(e)) for e in LINES]
        assert full[3]["samples"] == {"cpu_percent": 1.0}  # other kinds pass through
        assert db.execute("SELECT data FROM events_full WHERE seq = 1").fetchone()[0] \
            == msgspec.json.encode(LINES[0]).decode()  # byte for byte, key order included
        # full-text search and the log_lines view read logs, as before
        hit = db.execute("SELECT l.seq FROM logs_fts f JOIN logs l ON l.id = f.rowid"
                         " WHERE logs_fts MATCH 'publickey'").fetchall()
        assert hit == [(1,)]
        assert db.execute("SELECT severity, message FROM log_lines WHERE program = 'sshd'").fetchone() \
            == ("info", LINES[0].message)
        # a row stored whole before this change (an upgraded database) is shown as it is
        old = msgspec.json.encode(wire.Log(ts=5.0, source="x", message="from 0.1.0")).decode()
        db.execute("INSERT INTO events (node, seq, ts, kind, data) VALUES ('nas', 99, 5.0, 'log', ?)", (old,))
        assert db.execute("SELECT data FROM events_full WHERE seq = 99").fetchone()[0] == old
        db.close()
    finally:
        w.stop()
