"""project.insert_rows: the same rows as executemany, in one statement per chunk."""

from __future__ import annotations

import sqlite3

import pytest

from hub.project import insert_rows

SIZES = [0, 1, 2, 3, 4, 5, 17, 63, 64, 65, 255, 256, 257, 600]


def _db(columns: int = 3) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    cols = ", ".join(f"c{i}" for i in range(1, columns))
    db.execute(f"CREATE TABLE t (k INTEGER PRIMARY KEY, {cols}, n INTEGER DEFAULT 0)")
    return db


def _rows(n: int, width: int = 3, keys: int | None = None) -> list[tuple]:
    # keys < n: some rows repeat a key, so OR IGNORE and upserts meet their own batch
    return [(i % keys if keys else i, *(f"v{i}-{j}" if j % 2 else i * 0.5 for j in range(1, width))) for i in range(n)]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("sql", [
    "INSERT INTO t (k, c1, c2) VALUES (?, ?, ?)",
    "INSERT OR IGNORE INTO t (k, c1, c2) VALUES (?, ?, ?)",
    "INSERT INTO t (k, c1, c2) VALUES (?, ?, ?) ON CONFLICT (k) DO UPDATE SET c1 = excluded.c1, n = n + 1",
])
def test_same_table_as_executemany(n, sql):
    plain = "IGNORE" not in sql and "CONFLICT" not in sql
    rows = _rows(n, keys=None if plain else max(1, n // 3))
    a, b = _db(), _db()
    a.executemany(sql, rows)
    insert_rows(b, sql, rows)
    dump = "SELECT * FROM t ORDER BY k"
    assert b.execute(dump).fetchall() == a.execute(dump).fetchall()
    assert len(b.execute(dump).fetchall()) == len({r[0] for r in rows})


@pytest.mark.parametrize("bound", [32766, 999])  # SQLite's default since 3.32, and before
def test_wide_rows_stay_under_sqlites_variable_bound(bound):
    width = 200  # 256 rows x 200 would be 51,200 variables
    rows = _rows(300, width)
    sql = f"INSERT INTO t VALUES ({', '.join(['?'] * (width + 1))})"
    a, b = _db(width), _db(width)
    b.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, bound)
    a.executemany(sql, [(*r, 7) for r in rows])
    insert_rows(b, sql, [(*r, 7) for r in rows])
    assert b.execute("SELECT * FROM t").fetchall() == a.execute("SELECT * FROM t").fetchall()


def test_a_failing_row_fails_like_executemany():
    sql = "INSERT INTO t (k, c1, c2) VALUES (?, ?, ?)"
    rows = _rows(10) + [(3, "again", 1.0)]
    for run in (lambda db: db.executemany(sql, rows), lambda db: insert_rows(db, sql, rows)):
        db = _db()
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            run(db)


def test_other_statements_go_to_executemany():
    db = _db()
    insert_rows(db, "INSERT INTO t (k, c1, c2) VALUES (?, ?, ?)", _rows(5))
    insert_rows(db, "UPDATE t SET n = ? WHERE k = ?", [(9, 1), (8, 2)])
    insert_rows(db, "INSERT INTO t (k, c1, c2) VALUES (?, upper(?), ?)", [(10, "x", 1.0), (11, "y", 2.0)])
    assert db.execute("SELECT k, n FROM t WHERE n > 0 ORDER BY k").fetchall() == [(1, 9), (2, 8)]
    assert db.execute("SELECT c1 FROM t WHERE k >= 10 ORDER BY k").fetchall() == [("X",), ("Y",)]
