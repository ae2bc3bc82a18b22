"""The containers capability's tables, as named migrations (see hub/schema.py)."""

from __future__ import annotations

import sqlite3

from hub.schema import migration_set, script

MIGRATIONS, migration = migration_set()


@migration
def m900_containers(db: sqlite3.Connection) -> None:
    script(db,
        """
        -- Each node's containers as last reported; a removed one stays, with state 'removed'.
        CREATE TABLE containers (
            node TEXT NOT NULL,
            name TEXT NOT NULL,
            id TEXT NOT NULL,
            image TEXT NOT NULL,
            state TEXT NOT NULL,
            health TEXT,
            restarts INTEGER NOT NULL DEFAULT 0,
            exit_code INTEGER,
            engine TEXT NOT NULL,
            changed REAL NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (node, name)
        );
        -- Every change: started, became unhealthy, restarted, removed.
        CREATE TABLE container_changes (
            node TEXT NOT NULL,
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            name TEXT NOT NULL,
            image TEXT NOT NULL,
            state TEXT NOT NULL,
            health TEXT,
            restarts INTEGER NOT NULL,
            exit_code INTEGER,
            previous TEXT,
            PRIMARY KEY (node, seq)
        );
        CREATE INDEX container_changes_name ON container_changes(node, name, ts);
        """
    )
