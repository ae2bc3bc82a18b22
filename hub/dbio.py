"""`homelab-hub db export` and `db import`: tables out to JSON lines or CSV, and back.

sqlite-utils does the work it is good at (typed rows, batched inserts, upserts by primary
key, CSV sniffing); the hub only decides what may leave and what may come in:

- export reads any table or view on a read-only connection; secret columns (credential and
  token hashes, job signatures) leave as null, so an export can be shared or committed;
- import writes only tables a person authors (``IMPORTABLE``), in one transaction: a file
  with one bad row changes nothing, and the error names the row and what is wrong. Tables
  the hub derives from events (the twin, alerts, proposals, the audit) are never imported:
  they would contradict the events they come from.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import sqlite_utils

from hub.errors import BadRequest, NotFound
from hub.schema import SECRET_COLUMNS
from hub.store import connect

IMPORTABLE = {
    "kb_categories": "knowledge-base categories and their keywords",
    "kb_training": "a person's category choices the classifier learns from",
    "node_profiles": "which profile applies to which node",
}
FORMATS = ("jsonl", "csv")


def _names(db: sqlite_utils.Database) -> list[str]:
    return sorted(db.table_names() + db.view_names())


def export_rows(path: Path, table: str, where: str | None = None) -> tuple[list[str], Iterator[dict]]:
    """The columns and rows of ``table`` (secret columns as None)."""
    conn = connect(path, readonly=True)
    db = sqlite_utils.Database(conn)
    names = _names(db)
    if table not in names:
        conn.close()
        raise NotFound(f"no table or view {table!r} (there are: {', '.join(names)})")
    columns = [c.name for c in (db[table].columns)]
    hidden = {c for t, c in SECRET_COLUMNS if t == table}

    def rows() -> Iterator[dict]:
        try:
            for row in db[table].rows_where(where):
                yield {k: (None if k in hidden else v) for k, v in row.items()}
        except sqlite3.OperationalError as e:
            raise BadRequest(f"--where {where!r}: {e}") from None
        finally:
            conn.close()

    return columns, rows()


def write(out: IO[str], columns: list[str], rows: Iterable[dict], fmt: str) -> int:
    n = 0
    if fmt == "csv":
        w = csv.DictWriter(out, columns)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
            n += 1
    else:
        for row in rows:
            out.write(json.dumps(row, default=lambda b: b.hex() if isinstance(b, bytes) else str(b)))
            out.write("\n")
            n += 1
    return n


def read(text: str, fmt: str, name: str) -> list[dict[str, Any]]:
    """Rows from JSON lines or CSV text; errors name the line."""
    if fmt == "csv":
        return [dict(r) for r in csv.DictReader(io.StringIO(text))]
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadRequest(f"{name}, line {i}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise BadRequest(f"{name}, line {i}: expected an object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _literal(sql: str) -> Any:
    """A column's DEFAULT as a value, when it is a plain number or string literal."""
    try:
        return json.loads(sql)
    except ValueError:
        if len(sql) >= 2 and sql[0] == sql[-1] == "'":
            return sql[1:-1].replace("''", "'")
        return None


def import_rows(path: Path, table: str, rows: list[dict[str, Any]], name: str) -> int:
    """Upsert ``rows`` into ``table`` by its primary key (or add them, when no row names
    it), all or nothing."""
    if table not in IMPORTABLE:
        allowed = "; ".join(f"{t} ({what})" for t, what in sorted(IMPORTABLE.items()))
        raise BadRequest(f"{table!r} cannot be imported: only tables a person authors can ({allowed})")
    # Python's default (deferred) transactions, so sqlite-utils' one batch is one transaction
    # that rolls back whole on an error; the hub's own connections run in autocommit mode.
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA foreign_keys = ON")
    try:
        db = sqlite_utils.Database(conn)
        t = db.table(table)  # IMPORTABLE names tables, never views
        columns = {c.name for c in t.columns}
        for i, row in enumerate(rows, 1):
            unknown = set(row) - columns
            if unknown:
                raise BadRequest(f"{name}, row {i}: {table} has no column {sorted(unknown)[0]!r}"
                                 f" (columns: {', '.join(sorted(columns))})")
        # a column the file leaves out takes its declared default, not NULL
        defaults = {c.name: _literal(c.default_value) for c in t.columns
                    if c.default_value is not None and _literal(c.default_value) is not None}
        rows = [{**{k: v for k, v in defaults.items() if k not in row}, **row} for row in rows]
        # one call is one transaction (sqlite-utils commits per call): every row names its
        # primary key (an upsert) or none does (new rows)
        keyed = [all(k in row for k in t.pks) for row in rows]
        if any(keyed) and not all(keyed):
            raise BadRequest(f"{name}: row {keyed.index(False) + 1} has no {', '.join(t.pks)}:"
                             " give the primary key in every row (to update) or in none (to add)")
        write = t.upsert_all if all(keyed) else t.insert_all
        try:
            write(rows, pk=t.pks, alter=False, batch_size=max(1, len(rows)))
        except sqlite3.IntegrityError as e:
            raise BadRequest(f"{name}: {e} (nothing was imported)") from None
        return len(rows)
    finally:
        conn.close()
