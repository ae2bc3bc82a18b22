"""The profiles capability's tables and views, as named migrations (see hub/schema.py)."""

from __future__ import annotations

import sqlite3

from hub.schema import migration_set, script

MIGRATIONS, migration = migration_set()


@migration
def m601_node_profiles(db: sqlite3.Connection) -> None:
    script(db,
        """
        -- Profiles assigned to nodes; applied (as proposals) once the node first reports.
        CREATE TABLE node_profiles (
            node TEXT NOT NULL REFERENCES nodes(name),
            profile TEXT NOT NULL,
            assigned REAL NOT NULL,
            applied REAL,               -- when its proposals were created
            proposals TEXT,             -- their ids (JSON list)
            error TEXT,                 -- why it could not be applied
            PRIMARY KEY (node, profile)
        );
        """
    )
