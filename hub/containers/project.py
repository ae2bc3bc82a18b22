"""Projection of ``container`` events into containers and container_changes."""

from __future__ import annotations

from agent import wire
from hub.project import Projector, handles

CHANGE_SQL = (
    "INSERT OR IGNORE INTO container_changes (node, seq, ts, name, image, state, health, restarts,"
    " exit_code, previous) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# a removed container keeps its row (state 'removed'): when it went is worth knowing
STATE_SQL = (
    "INSERT INTO containers (node, name, id, image, state, health, restarts, exit_code, engine,"
    " changed, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node, name) DO UPDATE SET id = excluded.id, image = excluded.image,"
    " state = excluded.state, health = excluded.health, restarts = excluded.restarts,"
    " exit_code = excluded.exit_code, engine = excluded.engine, changed = excluded.changed,"
    " seq = excluded.seq WHERE excluded.seq > containers.seq"
)


@handles(wire.Container)
def _container(p: Projector, node: str, seq: int, ts: float, ev: wire.Container) -> None:
    p.emit(CHANGE_SQL, (node, seq, ts, ev.name, ev.image, ev.state, ev.health, ev.restarts,
                        ev.exit_code, ev.previous))
    p.emit(STATE_SQL, (node, ev.name, ev.id, ev.image, ev.state, ev.health, ev.restarts,
                       ev.exit_code, ev.engine, ts, seq))
