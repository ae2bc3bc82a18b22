"""Read-side queries used by the CLI (all on read-only connections)."""

from __future__ import annotations

import time
from pathlib import Path

from hub.store import connect


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s // n}{unit} ago"
    return f"{s}s ago"


def node_list(path: Path, offline_after: float) -> list[dict]:
    if not Path(path).exists():
        return []
    db = connect(path, readonly=True)
    now = time.time()
    out = []
    for r in db.execute("SELECT * FROM nodes ORDER BY name"):
        seen = r["last_seen"]
        state = "never seen" if seen is None else ("online" if now - seen <= offline_after else "offline")
        out.append({
            "name": r["name"], "state": state, "last_seen": seen,
            "last_seen_ago": ago(None if seen is None else now - seen),
            "last_seq": r["last_seq"], "clock_skew": r["clock_skew"], "address": r["address"],
        })
    db.close()
    return out
