"""Run one SELECT safely: read-only connection, an authorizer that allows reading only,
a row limit and a time limit. Used for every ``ask`` query, templates included, so a bug in
a template cannot write either, and free SQL from a model gets no further than a template.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from hub.errors import BadRequest
from hub.schema import SECRET_COLUMNS

ROW_LIMIT = 200
TIME_LIMIT = 3.0
SQL_MAX = 2000

# Secrets a question never needs: join tokens (refused), credential hashes and signed job
# payloads (read as NULL).
DENY_TABLES = {"join_tokens", "kb_training"}
DENY_COLUMNS = SECRET_COLUMNS | {("jobs", "payload")}
ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                   getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
DENY_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
_START = re.compile(r"^\s*(select|with)\b", re.I)


class QueryError(BadRequest):
    """A query that is not allowed or failed; the message says why."""


def _authorizer(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action not in ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_READ:
        if arg1 in DENY_TABLES:
            return sqlite3.SQLITE_DENY
        if (arg1, arg2) in DENY_COLUMNS:
            return sqlite3.SQLITE_IGNORE  # reads as NULL: SELECT * FROM nodes still works
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENY_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def check_select(sql: str) -> str:
    """Static checks before SQLite sees it: one statement, a SELECT, bounded length."""
    sql = sql.strip().rstrip(";").strip()
    if not sql:
        raise QueryError("empty query")
    if len(sql) > SQL_MAX:
        raise QueryError(f"query is {len(sql)} characters; the limit is {SQL_MAX}")
    if not _START.match(sql):
        raise QueryError("only SELECT (or WITH ... SELECT) queries are allowed")
    if ";" in sql.replace("';'", ""):
        raise QueryError("only one statement is allowed")
    return sql


def run_select(path: Path | str, sql: str, args: dict | tuple = (), *, row_limit: int = ROW_LIMIT,
               time_limit: float = TIME_LIMIT) -> tuple[list[str], list[list[Any]], bool]:
    """(columns, rows, truncated). Raises QueryError naming what was refused or failed."""
    sql = check_select(sql)
    if not Path(path).exists():
        raise QueryError(f"no hub database at {path}")
    from hub.store import connect

    db = connect(path, readonly=True)
    deadline = time.monotonic() + time_limit
    try:
        db.set_authorizer(_authorizer)
        db.set_progress_handler(lambda: int(time.monotonic() > deadline), 2000)
        try:
            cur = db.execute(sql, args)
            rows = cur.fetchmany(row_limit + 1)
        except sqlite3.DatabaseError as e:
            msg = str(e)
            if "interrupted" in msg:
                msg = f"query ran longer than {time_limit:g}s and was stopped"
            elif "not authorized" in msg or "prohibited" in msg:
                msg = f"query refused: {msg} (only reading non-secret tables is allowed)"
            raise QueryError(msg) from None
        cols = [d[0] for d in cur.description or ()]
        return cols, [list(r) for r in rows[:row_limit]], len(rows) > row_limit
    finally:
        db.close()
