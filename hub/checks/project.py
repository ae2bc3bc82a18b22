"""Projection of ``check`` events (agent/collectors/checks.py) into checks and check_results."""

from __future__ import annotations

from agent import wire
from hub.project import Projector, handles

RESULT_SQL = (
    "INSERT INTO check_results (node, name, ts, ok, latency_ms, status, error, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# since moves only when ok flips: "down for 2 m" reads straight off the row
LATEST_SQL = (
    "INSERT INTO checks (node, name, type, target, ok, latency_ms, status, error, cert_expires,"
    " cert_days, detail, ts, since, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node, name) DO UPDATE SET type = excluded.type, target = excluded.target,"
    " since = CASE WHEN checks.ok = excluded.ok THEN checks.since ELSE excluded.ts END,"
    " ok = excluded.ok, latency_ms = excluded.latency_ms, status = excluded.status,"
    " error = excluded.error, cert_expires = excluded.cert_expires, cert_days = excluded.cert_days,"
    " detail = excluded.detail, ts = excluded.ts, seq = excluded.seq"
    " WHERE excluded.ts >= checks.ts"
)


@handles(wire.CheckResult)
def _check(p: Projector, node: str, seq: int, ts: float, ev: wire.CheckResult) -> None:
    ok = int(ev.ok)
    p.emit(RESULT_SQL, (node, ev.name, ts, ok, ev.latency_ms, ev.status, ev.error, seq))
    p.emit(LATEST_SQL, (node, ev.name, ev.type, ev.target, ok, ev.latency_ms, ev.status, ev.error,
                        ev.cert_expires, ev.cert_days, ev.detail, ts, ts, seq))
