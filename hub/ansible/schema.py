"""The ansible capability's tables and views, as named migrations (see hub/schema.py)."""

from __future__ import annotations

import sqlite3

from hub.schema import migration_set, script

MIGRATIONS, migration = migration_set()


@migration
def m600_exports(db: sqlite3.Connection) -> None:
    script(db,
        """
        -- Every `export ansible` run: the node's state at the time (the baseline for `drift`).
        CREATE TABLE exports (
            id INTEGER PRIMARY KEY,
            node TEXT NOT NULL REFERENCES nodes(name),
            created REAL NOT NULL,
            kind TEXT NOT NULL,         -- ansible
            dir TEXT NOT NULL,          -- where it was written
            manifest TEXT NOT NULL      -- export.json: packages, services, files (JSON)
        );
        CREATE INDEX exports_node ON exports(node, created);
        """
    )


@migration
def m610_file_baseline(db: sqlite3.Connection) -> None:
    script(db,
        """
        -- The watched files as each agent found them at its first start (file_baseline events):
        -- the starting content that later diffs in file_changes apply to, so an export
        -- recreates configuration older than the agent.
        CREATE TABLE file_baseline (
            node TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT,
            content TEXT,              -- small non-secret text files only
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            PRIMARY KEY (node, path)
        );
        """
    )
