"""The notify capability's tables, as named migrations (see hub/schema.py)."""

from __future__ import annotations

import sqlite3

from hub.schema import migration_set, script

MIGRATIONS, migration = migration_set()


@migration
def m700_notify_outbox(db: sqlite3.Connection) -> None:
    script(db,
        """
        -- Every notification owed to a target, written in the same transaction as what caused
        -- it (an alert's state change, a proposal's transition), so a restart loses none.
        -- target is a hash of the URL: URLs carry passwords and tokens, which stay in settings.
        CREATE TABLE notify_outbox (
            id INTEGER PRIMARY KEY,
            created REAL NOT NULL,
            channel TEXT NOT NULL CHECK (channel IN ('apprise', 'webhook', 'alertmanager')),
            target TEXT NOT NULL,
            topic TEXT NOT NULL,        -- firing, resolved, proposal, fix, test
            severity TEXT NOT NULL,
            node TEXT,
            alert_id INTEGER,
            proposal_id INTEGER,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            payload TEXT,               -- the JSON item for webhook and Alertmanager targets
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at REAL NOT NULL,      -- not before (group wait, backoff, rate limit)
            sent_at REAL,
            error TEXT
        );
        CREATE INDEX notify_outbox_due ON notify_outbox(state, next_at);
        CREATE INDEX notify_outbox_alert ON notify_outbox(alert_id, channel);
        -- How far the outbox has read append-only tables it watches (proposal_transitions).
        CREATE TABLE notify_cursor (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
        INSERT INTO notify_cursor (name, last_id)
            SELECT 'proposal_transitions', coalesce(max(id), 0) FROM proposal_transitions;
        """
    )
