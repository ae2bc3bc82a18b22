"""The checks capability's tables, as named migrations (see hub/schema.py)."""

from __future__ import annotations

import sqlite3

from hub.schema import migration_set, script

MIGRATIONS, migration = migration_set()


@migration
def m800_checks(db: sqlite3.Connection) -> None:
    script(db,
        """
        -- The latest result of each active check, per node that runs it.
        CREATE TABLE checks (
            node TEXT NOT NULL,
            name TEXT NOT NULL,
            type TEXT NOT NULL,
            target TEXT NOT NULL,
            ok INTEGER NOT NULL,
            latency_ms REAL,
            status INTEGER,
            error TEXT,
            cert_expires REAL,
            cert_days REAL,
            detail TEXT,
            ts REAL NOT NULL,
            since REAL NOT NULL,      -- when ok last changed (up or down since)
            seq INTEGER NOT NULL,
            PRIMARY KEY (node, name)
        );
        -- Every run: the history behind uptime and latency graphs (pruned with events).
        CREATE TABLE check_results (
            node TEXT NOT NULL,
            name TEXT NOT NULL,
            ts REAL NOT NULL,
            ok INTEGER NOT NULL,
            latency_ms REAL,
            status INTEGER,
            error TEXT,
            seq INTEGER NOT NULL
        );
        CREATE INDEX check_results_node_name_ts ON check_results(node, name, ts);
        CREATE INDEX check_results_ts ON check_results(ts);
        """
    )


# Views: one definition each. hub.schema.migrate (re)creates a view after the migrations
# whenever its stored SQL differs from this; a migration never creates or drops one.
VIEWS = {
    "checks_down": """
        SELECT node, name, type, target, error, datetime(since, 'unixepoch') AS down_since
        FROM checks WHERE ok = 0
    """,
    "check_uptime_24h": """
        SELECT node, name, count(*) AS runs, round(100.0 * sum(ok) / count(*), 2) AS uptime_pct,
               round(avg(latency_ms), 1) AS avg_latency_ms, round(max(latency_ms), 1) AS max_latency_ms
        FROM check_results WHERE ts > unixepoch() - 86400 GROUP BY node, name
    """,
}
