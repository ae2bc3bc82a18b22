"""Log lines and shell commands into the ``logs`` and ``commands`` tables (m101, m102).

Both are append-only histories keyed by the event's (node, seq); the full-text tables
index each commit's new rows in one statement (m103: per-row triggers made FTS5 write a
segment per row). A value the schema cannot hold (a severity outside 0-7, which
would break the foreign key to ``log_severities``) becomes NULL rather than failing the
batch: one odd agent must not wedge its own ingest. ``OR IGNORE`` makes a replayed
(node, seq) harmless even if the events table was pruned underneath it.
"""

from __future__ import annotations

import msgspec

from agent import wire
from hub.project import Projector, handles

_encode = msgspec.json.Encoder().encode

LOG_SQL = (
    "INSERT OR IGNORE INTO logs (node, seq, ts, source, host, program, pid, unit, facility,"
    " severity, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
COMMAND_SQL = (
    "INSERT OR IGNORE INTO commands (node, seq, ts, user, cwd, command, exit_code, duration_ms,"
    " tty, shell, redacted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

def _fts_once(table: str, cols: str) -> tuple[str, str]:
    return (
        f"INSERT INTO {table}_fts (rowid, {cols}) SELECT id, {cols} FROM {table}"
        f" WHERE id > (SELECT last_id FROM fts_sync WHERE name = '{table}')",
        f"UPDATE fts_sync SET last_id = (SELECT coalesce(max(id), 0) FROM {table}) WHERE name = '{table}'",
    )


LOG_FTS = _fts_once("logs", "message")
COMMAND_FTS = _fts_once("commands", "command, cwd")


@handles(wire.Log)
def _log(p: Projector, node: str, seq: int, ts: float, ev: wire.Log) -> str:
    """The line into ``logs``; its ``events`` row keeps only what ``logs`` cannot hold (kind,
    time, and a severity outside 0-7), so a line is stored once (``events_full``, a view in hub/twin/schema.py)."""
    sev = ev.severity if ev.severity is not None and 0 <= ev.severity <= 7 else None
    p.emit(LOG_SQL, (node, seq, ts, ev.source, ev.host, ev.program, ev.pid, ev.unit,
                     ev.facility, sev, ev.message))
    for sql in LOG_FTS:
        p.emit_once(sql)
    if sev is None and ev.severity is not None:
        return _encode({"kind": "log", "ts": ts, "severity": ev.severity}).decode()
    return _encode({"kind": "log", "ts": ts}).decode()


# An events row's data with a log line's fields put back from ``logs`` (the events table
# aliased ``e``): what the ``events_full`` view and Datasette's ``events`` show. Keys in the
# order and with the omissions of the agent's own JSON (msgspec, omit_defaults).
EVENT_DATA = (
    "CASE WHEN e.kind = 'log' AND json_extract(e.data, '$.message') IS NULL THEN coalesce(("
    "SELECT json_patch(json_object('kind', 'log'), json_object("
    "'source', l.source, 'message', l.message, 'program', l.program, 'pid', l.pid,"
    " 'severity', coalesce(l.severity, json_extract(e.data, '$.severity')), 'facility', l.facility,"
    " 'host', l.host, 'unit', l.unit, 'ts', e.ts)) FROM logs l WHERE l.node = e.node AND l.seq = e.seq), e.data)"
    " ELSE e.data END"
)


@handles(wire.Command)
def _command(p: Projector, node: str, seq: int, ts: float, ev: wire.Command) -> None:
    p.emit(COMMAND_SQL, (node, seq, ts, ev.user, ev.cwd, ev.command, ev.exit_code,
                         ev.duration_ms, ev.tty, ev.shell, int(ev.redacted)))
    for sql in COMMAND_FTS:
        p.emit_once(sql)
