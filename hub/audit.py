"""The audit trail: append-only and hash-chained.

Every row stores ``hash = sha256(prev_hash + canonical JSON of the row)``, where the row is
its id, time, actor, action, proposal and data. Editing or deleting any row but the newest
breaks the chain at that row, which ``verify`` reports; SQLite triggers refuse UPDATE and
DELETE outright, so tampering needs a deliberate DROP TRIGGER first. Deleting the newest rows
leaves a valid shorter chain: keep the head hash that ``homelab-hub audit verify`` prints
somewhere else if you need to detect that too.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def row_hash(prev_hash: str, id_: int, ts: float, actor: str, action: str,
             proposal_id: int | None, data: str) -> str:
    body = canonical({"id": id_, "ts": ts, "actor": actor, "action": action,
                      "proposal_id": proposal_id, "data": data})
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def append(db: sqlite3.Connection, actor: str, action: str, proposal_id: int | None = None,
           data: dict | None = None, ts: float | None = None) -> int:
    """Append one entry. Call inside the caller's write transaction (the writer's, or the
    CLI's BEGIN IMMEDIATE) so the chain head cannot move between read and insert."""
    last = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    prev_id, prev_hash = (last[0], last[1]) if last else (0, GENESIS)
    id_ = prev_id + 1
    ts = time.time() if ts is None else ts
    payload = canonical(data or {})
    h = row_hash(prev_hash, id_, ts, actor, action, proposal_id, payload)
    db.execute(
        "INSERT INTO audit (id, ts, actor, action, proposal_id, data, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (id_, ts, actor, action, proposal_id, payload, prev_hash, h),
    )
    return id_


@dataclass
class Verdict:
    ok: bool
    rows: int
    head: str
    bad_id: int | None = None
    problem: str = ""


def verify(db: sqlite3.Connection) -> Verdict:
    prev_hash, expect_id, n = GENESIS, 1, 0
    for r in db.execute(
        "SELECT id, ts, actor, action, proposal_id, data, prev_hash, hash FROM audit ORDER BY id"
    ):
        id_, ts, actor, action, pid, data, stored_prev, stored = tuple(r)
        if id_ != expect_id:
            return Verdict(False, n, prev_hash, expect_id,
                           f"row {expect_id} is missing (next row is {id_})")
        if stored_prev != prev_hash:
            return Verdict(False, n, prev_hash, id_,
                           f"row {id_} does not follow row {id_ - 1} (previous hash differs)")
        if row_hash(prev_hash, id_, ts, actor, action, pid, data) != stored:
            return Verdict(False, n, prev_hash, id_, f"row {id_} was altered (its hash does not match)")
        prev_hash, expect_id, n = stored, expect_id + 1, n + 1
    return Verdict(True, n, prev_hash)
