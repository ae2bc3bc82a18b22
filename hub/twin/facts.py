"""Facts: the current state any collector reports as keyed snapshots (``wire.Facts``).

A snapshot replaces the node's items of that source: new keys are added, different values
changed, missing keys removed, and each difference is one row of ``twin_fact_changes``. The
first snapshot of a source is a baseline: its items are stored but not reported as changes.
The row with the empty key (never a real key) records when the source last reported.
Diffing reads the stored state, so it runs deferred, in arrival order, inside the writer's
transaction (two snapshots in one commit diff against each other, not both against the old).
"""

from __future__ import annotations

import json
import sqlite3

from agent import wire
from hub.project import Projector, handles

CHANGE_SQL = (
    "INSERT INTO twin_fact_changes (node, seq, ts, source, key, change, value, old_value)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
UPSERT_SQL = (
    "INSERT INTO twin_facts (node, source, key, value, updated, seq) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node, source, key) DO UPDATE SET value = excluded.value,"
    " updated = excluded.updated, seq = excluded.seq"
)


def apply_snapshot(db: sqlite3.Connection, node: str, seq: int, ts: float, source: str,
                   items: dict[str, str]) -> None:
    old = dict(db.execute("SELECT key, value FROM twin_facts WHERE node = ? AND source = ?",
                          (node, source)).fetchall())
    baseline = old.pop("", None) is None
    changes: list[tuple[str, int, float, str, str, str, str | None, str | None]] = []
    upserts = [(node, source, "", "{}", ts, seq)]
    for key, value in items.items():
        was = old.pop(key, None)
        if was == value:
            continue
        upserts.append((node, source, key, value, ts, seq))
        if not baseline:
            changes.append((node, seq, ts, source, key, "added" if was is None else "changed",
                            value, was))
    changes += [(node, seq, ts, source, key, "removed", None, was) for key, was in old.items()]
    db.executemany(UPSERT_SQL, upserts)
    db.executemany(CHANGE_SQL, changes)
    if old:
        db.executemany("DELETE FROM twin_facts WHERE node = ? AND source = ? AND key = ?",
                       [(node, source, key) for key in old])


@handles(wire.Facts)
def _facts(p: Projector, node: str, seq: int, ts: float, ev: wire.Facts) -> None:
    items = {k: json.dumps(v, sort_keys=True, separators=(",", ":"), default=str)
             for k, v in ev.items.items()}
    p.defer(lambda db: apply_snapshot(db, node, seq, ts, ev.source, items))
