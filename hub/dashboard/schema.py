"""The dashboard's table (see hub/schema.py): the database's size over time, so `status` can
say how fast it grows."""

from __future__ import annotations

import sqlite3

from hub.schema import migration_set

MIGRATIONS, migration = migration_set()


@migration
def m700_db_sizes(db: sqlite3.Connection) -> None:
    # One row an hour while the hub runs (hub/dashboard/web.py); kept for 400 days.
    db.execute("CREATE TABLE db_sizes (ts REAL PRIMARY KEY, bytes INTEGER NOT NULL)")
