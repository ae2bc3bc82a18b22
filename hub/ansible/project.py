"""Projection of ``file_baseline`` events: each file joins the node's ``files`` state (unless
a newer change is already there) and its content, when sent, is kept in ``file_baseline``."""

from __future__ import annotations

from agent import wire
from hub.project import Projector, handles

BASELINE_SQL = (
    "INSERT INTO file_baseline (node, path, sha256, content, seq, ts) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node, path) DO UPDATE SET sha256 = excluded.sha256, content = excluded.content,"
    " seq = excluded.seq, ts = excluded.ts WHERE excluded.seq >= file_baseline.seq"
)
STATE_SQL = (
    "INSERT INTO files (node, path, size, mode, uid, gid, sha256, secret, deleted, changed, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)"
    " ON CONFLICT (node, path) DO UPDATE SET size = excluded.size, mode = excluded.mode,"
    " uid = excluded.uid, gid = excluded.gid, sha256 = excluded.sha256, secret = excluded.secret,"
    " deleted = 0, changed = excluded.changed, seq = excluded.seq WHERE excluded.seq >= files.seq"
)


@handles(wire.FileBaseline)
def _baseline(p: Projector, node: str, seq: int, ts: float, ev: wire.FileBaseline) -> None:
    for f in ev.files:
        p.emit(BASELINE_SQL, (node, f.path, f.sha256, None if f.secret else f.content, seq, ts))
        p.emit(STATE_SQL, (node, f.path, f.size, f.mode, f.uid, f.gid, f.sha256, int(f.secret), ts, seq))
