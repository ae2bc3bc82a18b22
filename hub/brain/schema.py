"""The brain capability's tables and views, as named migrations (see hub/schema.py)."""

from __future__ import annotations

import sqlite3

from hub.schema import migration_set, script

MIGRATIONS, migration = migration_set()


@migration
def m400_brain_decisions(db: sqlite3.Connection) -> None:
    script(db,
        """
        -- Every time the brain was asked to choose (a fix, a query template, a digest item):
        -- what it was shown, what it said, what we made of it. Reviewable, never trusted.
        CREATE TABLE brain_decisions (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            purpose TEXT NOT NULL,              -- propose, ask, digest
            alert_id INTEGER,                   -- the alert this decision was about, if any
            node TEXT,
            prompt TEXT NOT NULL,
            context_ids TEXT NOT NULL DEFAULT '[]',   -- JSON list of ids shown to the model
            raw_output TEXT,                    -- exactly what the model produced (NULL: no model)
            parsed TEXT,                        -- JSON: the result that was used
            outcome TEXT NOT NULL,              -- accepted, fallback:<reason>, no_model
            model TEXT,                         -- model file path
            model_sha256 TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_ms INTEGER
        );
        CREATE INDEX brain_decisions_alert ON brain_decisions(alert_id);
        CREATE INDEX brain_decisions_ts ON brain_decisions(ts);
        """
    )
