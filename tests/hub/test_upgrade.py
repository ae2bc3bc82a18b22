"""A database written by the previous release (0.1.0, before migrations moved into the
capability packages) opens under this one with nothing lost: every old migration is
recognised by name and not run again, only new ones run, and every row of every old table
is still there, byte for byte. tests/data/hub-0.1.0.db was made by that release's real
hub from one ingest of assorted events (a failed unit among them, so rules fired)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

from hub.schema import all_migrations, all_views
from hub.store import open_db

OLD = Path(__file__).resolve().parent.parent / "data" / "hub-0.1.0.db"


def _contents(db: sqlite3.Connection, columns: dict[str, list[str]] | None = None
              ) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every table's rows (over ``columns``, the old release's,
    when given: a later migration may add a column, never change what was there)."""
    out = {}
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                              " AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '%_fts%'"
                              " AND name != '_migrations'"):
        cols = ", ".join(f'"{c}"' for c in columns[name]) if columns and name in columns else "*"
        rows = db.execute(f'SELECT {cols} FROM "{name}" ORDER BY 1').fetchall()
        out[name] = (len(rows), hashlib.sha256(repr([tuple(r) for r in rows]).encode()).hexdigest())
    return out


def test_the_previous_release_database_upgrades_with_nothing_lost(tmp_path):
    path = tmp_path / "homelab.db"
    shutil.copy(OLD, path)
    before_db = sqlite3.connect(path)
    before = _contents(before_db)
    columns = {name: [r[1] for r in before_db.execute(f'PRAGMA table_info("{name}")')]
               for name in before}
    old_names = {r[0] for r in before_db.execute("SELECT name FROM _migrations")}
    before_db.close()
    assert before["events"][0] == 7 and before["alerts"][0] >= 1  # the fixture is what it says

    db = open_db(path)
    ran = {r[0] for r in db.execute("SELECT name FROM _migrations")}
    expected = {fn.__name__ for fn in all_migrations()}
    assert ran == expected and old_names <= expected
    after = _contents(db, columns)
    for table, (count, digest) in before.items():
        assert after[table] == (count, digest), f"{table} changed by the upgrade"
    # the views the CLI and Datasette read still answer over the old rows
    assert db.execute("SELECT count(*) FROM changes WHERE node = 'nas01'").fetchone()[0] >= 3
    assert db.execute("SELECT hostname FROM twin_summary").fetchone()[0] == "nas01"
    assert db.execute("SELECT count(*) FROM logs_fts WHERE logs_fts MATCH 'password'").fetchone()[0] == 1
    # log events stored whole before log lines were stored once read the same through events_full
    assert db.execute("SELECT id, data FROM events_full ORDER BY id").fetchall() \
        == db.execute("SELECT id, data FROM events ORDER BY id").fetchall()
    db.close()


def _views(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'"))


def test_views_are_the_same_after_a_fresh_create_and_an_upgrade(tmp_path):
    fresh = open_db(tmp_path / "fresh" / "homelab.db")
    shutil.copy(OLD, tmp_path / "homelab.db")
    upgraded = open_db(tmp_path / "homelab.db")
    assert _views(fresh) == _views(upgraded) == all_views()
    fresh.close()
    upgraded.close()


def test_a_changed_view_definition_is_applied_on_the_next_open(tmp_path, monkeypatch):
    import hub.twin.schema

    path = tmp_path / "homelab.db"
    open_db(path).close()
    db = open_db(path)  # nothing changed: the schema is not written again
    version = db.execute("PRAGMA schema_version").fetchone()[0]
    db.close()
    db = open_db(path)
    assert db.execute("PRAGMA schema_version").fetchone()[0] == version
    db.close()

    monkeypatch.setitem(hub.twin.schema.VIEWS, "failed_units",
                        "SELECT node, unit, 'changed' AS note FROM services WHERE active = 'failed'")
    db = open_db(path)
    assert _views(db)["failed_units"] == all_views()["failed_units"]
    assert "'changed' AS note" in _views(db)["failed_units"]
    assert [d[0] for d in db.execute("SELECT * FROM failed_units").description] == ["node", "unit", "note"]
    db.close()
