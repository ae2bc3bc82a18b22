"""Log lines and shell commands into the ``logs`` and ``commands`` tables (m101, m102).

Both are append-only histories keyed by the event's (node, seq); the full-text tables
follow them by triggers. A value the schema cannot hold (a severity outside 0-7, which
would break the foreign key to ``log_severities``) becomes NULL rather than failing the
batch: one odd agent must not wedge its own ingest. ``OR IGNORE`` makes a replayed
(node, seq) harmless even if the events table was pruned underneath it.
"""

from __future__ import annotations

from agent import wire
from hub.project import Projector, handles

LOG_SQL = (
    "INSERT OR IGNORE INTO logs (node, seq, ts, source, host, program, pid, unit, facility,"
    " severity, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
COMMAND_SQL = (
    "INSERT OR IGNORE INTO commands (node, seq, ts, user, cwd, command, exit_code, duration_ms,"
    " tty, shell, redacted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@handles(wire.Log)
def _log(p: Projector, node: str, seq: int, ts: float, ev: wire.Log) -> None:
    sev = ev.severity if ev.severity is not None and 0 <= ev.severity <= 7 else None
    p.emit(LOG_SQL, (node, seq, ts, ev.source, ev.host, ev.program, ev.pid, ev.unit,
                     ev.facility, sev, ev.message))


@handles(wire.Command)
def _command(p: Projector, node: str, seq: int, ts: float, ev: wire.Command) -> None:
    p.emit(COMMAND_SQL, (node, seq, ts, ev.user, ev.cwd, ev.command, ev.exit_code,
                         ev.duration_ms, ev.tty, ev.shell, int(ev.redacted)))
