"""The rules capability's tables and views, as named migrations (see hub/schema.py)."""

from __future__ import annotations

import sqlite3

from hub.schema import migration_set, script

MIGRATIONS, migration = migration_set()


@migration
def m200_alerts(db: sqlite3.Connection) -> None:
    script(db,
        """
        -- One row per alert: a rule's instance (group key) from pending to resolved.
        -- proposals.alert_id links the fixes proposed for it.
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            rule TEXT NOT NULL,
            key TEXT NOT NULL,          -- the group key values as a JSON list
            node TEXT,
            state TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
            severity TEXT NOT NULL,
            value REAL,
            summary TEXT,
            labels TEXT NOT NULL DEFAULT '{}',
            annotations TEXT NOT NULL DEFAULT '{}',
            fields TEXT NOT NULL DEFAULT '{}',
            propose TEXT NOT NULL DEFAULT '[]',
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            count INTEGER NOT NULL DEFAULT 1,
            pending_at REAL,
            firing_at REAL,
            resolved_at REAL
        );
        CREATE INDEX alerts_state ON alerts(state, rule);
        CREATE INDEX alerts_node ON alerts(node, first_seen);
        -- The events that caused an alert (bounded per alert).
        CREATE TABLE alert_events (
            alert_id INTEGER NOT NULL REFERENCES alerts(id),
            event_id INTEGER NOT NULL,
            PRIMARY KEY (alert_id, event_id)
        ) WITHOUT ROWID;
        """
    )


@migration
def m201_rule_reloads(db: sqlite3.Connection) -> None:
    script(db,
        """
        -- `homelab-hub rules reload` asks the running hub here (SIGHUP does the same without a
        -- row); the hub answers in the same row: all files valid and swapped in, or none.
        CREATE TABLE rule_reloads (
            id INTEGER PRIMARY KEY,
            requested REAL NOT NULL,
            requested_by TEXT NOT NULL,
            done REAL,
            ok INTEGER,
            outcome TEXT
        );
        """
    )


# Views: one definition each. hub.schema.migrate (re)creates a view after the migrations
# whenever its stored SQL differs from this; a migration never creates or drops one.
VIEWS = {
    "alerts_open": """
        SELECT id, rule, node, state, severity, summary, value, count,
               datetime(first_seen, 'unixepoch') AS first_seen,
               datetime(last_seen, 'unixepoch') AS last_seen, labels, annotations
        FROM alerts WHERE state != 'resolved'
    """,
}
