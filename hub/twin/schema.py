"""The twin capability's tables and views, as named migrations (see hub/schema.py)."""

from __future__ import annotations

import sqlite3

from hub.schema import migration_set, script
from hub.twin.activity import EVENT_DATA

MIGRATIONS, migration = migration_set()


@migration
def m101_logs(db: sqlite3.Connection) -> None:
    """Log lines (docs/logs-and-commands.md), full-text searchable; logs_fts follows logs by
    triggers (external content, so each message is stored once)."""
    script(db,
        """
        CREATE TABLE log_severities (severity INTEGER PRIMARY KEY, name TEXT NOT NULL);
        INSERT INTO log_severities VALUES (0, 'emerg'), (1, 'alert'), (2, 'crit'), (3, 'err'),
            (4, 'warning'), (5, 'notice'), (6, 'info'), (7, 'debug');
        CREATE TABLE logs (
            id INTEGER PRIMARY KEY,
            node TEXT NOT NULL REFERENCES nodes(name),
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            source TEXT NOT NULL,
            host TEXT,
            program TEXT,
            pid INTEGER,
            unit TEXT,
            facility TEXT,
            severity INTEGER REFERENCES log_severities(severity),
            message TEXT NOT NULL,
            UNIQUE (node, seq)
        );
        -- "logs of program X on node Y", a node's recent lines, everything since T, errors
        CREATE INDEX logs_node_program_ts ON logs(node, program, ts);
        CREATE INDEX logs_node_ts ON logs(node, ts);
        CREATE INDEX logs_ts ON logs(ts);
        CREATE INDEX logs_errors_ts ON logs(severity, ts) WHERE severity <= 3;
        CREATE VIRTUAL TABLE logs_fts USING fts5(message, content="logs", content_rowid="id");
        CREATE TRIGGER logs_ai AFTER INSERT ON logs BEGIN
            INSERT INTO logs_fts (rowid, message) VALUES (new.id, new.message);
        END;
        CREATE TRIGGER logs_ad AFTER DELETE ON logs BEGIN
            INSERT INTO logs_fts (logs_fts, rowid, message) VALUES ('delete', old.id, old.message);
        END;
        CREATE TRIGGER logs_au AFTER UPDATE OF message ON logs BEGIN
            INSERT INTO logs_fts (logs_fts, rowid, message) VALUES ('delete', old.id, old.message);
            INSERT INTO logs_fts (rowid, message) VALUES (new.id, new.message);
        END;
        """
    )


@migration
def m102_commands(db: sqlite3.Connection) -> None:
    """Shell commands (already redacted on the node). commands_fts indexes command line and
    working directory with the trigram tokenizer, so any substring of three or more
    characters, a path above all, is an index lookup: "which commands touched /etc/nginx"."""
    script(db,
        """
        CREATE TABLE commands (
            id INTEGER PRIMARY KEY,
            node TEXT NOT NULL REFERENCES nodes(name),
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            user TEXT,
            cwd TEXT,
            command TEXT NOT NULL,
            exit_code INTEGER,
            duration_ms INTEGER,
            tty TEXT,
            shell TEXT,
            redacted INTEGER NOT NULL DEFAULT 0,
            UNIQUE (node, seq)
        );
        CREATE INDEX commands_node_ts ON commands(node, ts);
        CREATE INDEX commands_user_ts ON commands(user, ts);
        CREATE INDEX commands_ts ON commands(ts);
        CREATE VIRTUAL TABLE commands_fts USING fts5(command, cwd, content="commands",
            content_rowid="id", tokenize="trigram");
        CREATE TRIGGER commands_ai AFTER INSERT ON commands BEGIN
            INSERT INTO commands_fts (rowid, command, cwd) VALUES (new.id, new.command, new.cwd);
        END;
        CREATE TRIGGER commands_ad AFTER DELETE ON commands BEGIN
            INSERT INTO commands_fts (commands_fts, rowid, command, cwd)
                VALUES ('delete', old.id, old.command, old.cwd);
        END;
        CREATE TRIGGER commands_au AFTER UPDATE OF command, cwd ON commands BEGIN
            INSERT INTO commands_fts (commands_fts, rowid, command, cwd)
                VALUES ('delete', old.id, old.command, old.cwd);
            INSERT INTO commands_fts (rowid, command, cwd) VALUES (new.id, new.command, new.cwd);
        END;
        """
    )


@migration
def m103_fts_by_batch(db: sqlite3.Connection) -> None:
    """Index new log lines and commands for full-text search once per commit, not per row.
    A per-row trigger runs inside each row's statement savepoint, and FTS5 writes its pending
    terms to disk at every savepoint: one tiny segment per row, ingest 10x slower (bench
    ingest, py-spy). fts_sync remembers the last row indexed; delete/update triggers stay."""
    script(db,
        """
        DROP TRIGGER logs_ai;
        DROP TRIGGER commands_ai;
        CREATE TABLE fts_sync (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
        INSERT INTO fts_sync VALUES ('logs', (SELECT coalesce(max(id), 0) FROM logs)),
                                    ('commands', (SELECT coalesce(max(id), 0) FROM commands));
        """
    )


@migration
def m110_twin(db: sqlite3.Connection) -> None:
    script(db,
        """
        -- One row per node: the main facts as columns, everything else in facts (JSON).
        CREATE TABLE inventory (
            node TEXT PRIMARY KEY REFERENCES nodes(name),
            hostname TEXT NOT NULL,
            os TEXT, kernel TEXT, arch TEXT,
            cpu_model TEXT, cpu_count INTEGER,
            memory_bytes INTEGER, swap_bytes INTEGER,
            boot_time REAL,
            primary_ip TEXT, tailscale_ip TEXT,
            facts TEXT NOT NULL,
            updated REAL NOT NULL,
            seq INTEGER NOT NULL
        );
        CREATE TABLE mounts (
            node TEXT NOT NULL REFERENCES nodes(name),
            mountpoint TEXT NOT NULL,
            device TEXT, fstype TEXT, options TEXT,
            total_bytes INTEGER,
            seq INTEGER NOT NULL,
            PRIMARY KEY (node, mountpoint)
        );
        CREATE TABLE disks (
            node TEXT NOT NULL REFERENCES nodes(name),
            name TEXT NOT NULL,
            size_bytes INTEGER, model TEXT, serial TEXT,
            rotational INTEGER, removable INTEGER,
            seq INTEGER NOT NULL,
            PRIMARY KEY (node, name)
        );
        CREATE TABLE interfaces (
            node TEXT NOT NULL REFERENCES nodes(name),
            name TEXT NOT NULL,
            mac TEXT, mtu INTEGER, up INTEGER, speed_mbps INTEGER,
            addresses TEXT,  -- space-separated CIDRs, IPv4 first
            seq INTEGER NOT NULL,
            PRIMARY KEY (node, name)
        );

        -- Packages as they are now; removed/purged ones keep their row (state says so).
        CREATE TABLE packages (
            node TEXT NOT NULL REFERENCES nodes(name),
            manager TEXT NOT NULL,
            name TEXT NOT NULL,
            arch TEXT NOT NULL DEFAULT '',
            version TEXT,
            manual INTEGER,
            state TEXT NOT NULL,  -- installed, removed, purged
            changed REAL NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (node, manager, name, arch)
        );
        CREATE INDEX packages_name ON packages(name);
        CREATE TABLE package_changes (
            id INTEGER PRIMARY KEY,
            node TEXT NOT NULL REFERENCES nodes(name),
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            manager TEXT NOT NULL,
            action TEXT NOT NULL,
            name TEXT NOT NULL,
            arch TEXT,
            version TEXT,
            old_version TEXT
        );
        CREATE INDEX package_changes_node_ts ON package_changes(node, ts);
        CREATE INDEX package_changes_ts ON package_changes(ts);
        CREATE INDEX package_changes_name ON package_changes(name);
        CREATE TABLE pending_updates (
            node TEXT NOT NULL REFERENCES nodes(name),
            manager TEXT NOT NULL,
            name TEXT NOT NULL,
            current TEXT, candidate TEXT,
            security INTEGER NOT NULL DEFAULT 0,
            checked REAL NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (node, manager, name)
        );

        CREATE TABLE services (
            node TEXT NOT NULL REFERENCES nodes(name),
            unit TEXT NOT NULL,
            active TEXT NOT NULL, sub TEXT, result TEXT,
            restarts INTEGER, enabled TEXT,
            changed REAL NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (node, unit)
        );
        CREATE INDEX services_active ON services(active);
        CREATE TABLE service_changes (
            id INTEGER PRIMARY KEY,
            node TEXT NOT NULL REFERENCES nodes(name),
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            unit TEXT NOT NULL,
            active TEXT NOT NULL, previous TEXT, sub TEXT, result TEXT, restarts INTEGER
        );
        CREATE INDEX service_changes_node_ts ON service_changes(node, ts);
        CREATE INDEX service_changes_ts ON service_changes(ts);

        -- Devices seen on each node; removed ones keep their row with present = 0.
        CREATE TABLE devices (
            node TEXT NOT NULL REFERENCES nodes(name),
            sys_path TEXT NOT NULL,
            subsystem TEXT NOT NULL, devtype TEXT, dev_node TEXT,
            vendor TEXT, model TEXT, serial TEXT, driver TEXT, bus TEXT,
            present INTEGER NOT NULL,
            changed REAL NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (node, sys_path)
        );
        CREATE INDEX devices_subsystem ON devices(subsystem);
        CREATE TABLE device_changes (
            id INTEGER PRIMARY KEY,
            node TEXT NOT NULL REFERENCES nodes(name),
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            action TEXT NOT NULL,
            subsystem TEXT NOT NULL, sys_path TEXT NOT NULL, devtype TEXT, dev_node TEXT,
            vendor TEXT, model TEXT, serial TEXT, driver TEXT, source TEXT
        );
        CREATE INDEX device_changes_node_ts ON device_changes(node, ts);
        CREATE INDEX device_changes_ts ON device_changes(ts);

        -- The latest top-processes sample per node (history: 'processes' events).
        CREATE TABLE processes (
            node TEXT NOT NULL REFERENCES nodes(name),
            pid INTEGER NOT NULL,
            rank INTEGER NOT NULL,
            name TEXT NOT NULL, user TEXT,
            cpu_percent REAL NOT NULL, rss_bytes INTEGER NOT NULL,
            cmdline TEXT,
            ts REAL NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (node, pid)
        );
        """
    )


@migration
def m111_device_moves(db: sqlite3.Connection) -> None:
    """Renamed devices (kernel "move" events) remember where they were; the timeline says so."""
    script(db,
        """
        ALTER TABLE device_changes ADD COLUMN old_sys_path TEXT;
        """
    )


@migration
def m112_package_requester(db: sqlite3.Connection) -> None:
    """Who asked for a package change and with which command (apt's history), when known."""
    script(db,
        """
        ALTER TABLE package_changes ADD COLUMN user TEXT;
        ALTER TABLE package_changes ADD COLUMN command TEXT;
        """
    )


@migration
def m113_file_changes_node_ts(db: sqlite3.Connection) -> None:
    """The changes timeline filters file_changes by node and time, not by path."""
    db.execute("CREATE INDEX IF NOT EXISTS file_changes_node_ts ON file_changes(node, ts)")


@migration
def m114_twin_summary(db: sqlite3.Connection) -> None:
    """Created the twin_summary view, which VIEWS below now defines. Kept, empty, so the
    databases that recorded it still know every name they ran."""


@migration
def m115_facts(db: sqlite3.Connection) -> None:
    """State any collector reports as keyed snapshots (wire.Facts), with no table of its own."""
    script(db,
        """
        CREATE TABLE twin_facts (
            node TEXT NOT NULL REFERENCES nodes(name),
            source TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,  -- JSON object
            updated REAL NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (node, source, key)
        ) WITHOUT ROWID;
        CREATE TABLE twin_fact_changes (
            id INTEGER PRIMARY KEY,
            node TEXT NOT NULL REFERENCES nodes(name),
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            source TEXT NOT NULL,
            key TEXT NOT NULL,
            change TEXT NOT NULL CHECK (change IN ('added', 'changed', 'removed')),
            value TEXT,
            old_value TEXT
        );
        CREATE INDEX twin_fact_changes_node_ts ON twin_fact_changes(node, ts);
        """
    )


# Views: one definition each. hub.schema.migrate (re)creates a view after the migrations
# whenever its stored SQL differs from this; a migration never creates or drops one.
VIEWS = {
    "log_lines": """
        SELECT l.id, l.node, datetime(l.ts, 'unixepoch') AS time, l.ts, l.host, l.program,
               l.pid, l.unit, l.facility, s.name AS severity, l.source, l.message
        FROM logs l LEFT JOIN log_severities s ON s.severity = l.severity
    """,
    "command_history": """
        SELECT id, node, datetime(ts, 'unixepoch') AS time, ts, user, cwd, command,
               exit_code, duration_ms, tty, shell, redacted
        FROM commands
    """,
    # What changed on each node, one timeline: packages, files, services, devices.
    "changes": """
        SELECT node, ts, datetime(ts, 'unixepoch') AS time, 'package' AS kind,
               name || CASE WHEN arch IS NOT NULL AND arch != '' THEN ':' || arch ELSE '' END AS subject,
               action,
               CASE WHEN old_version IS NOT NULL AND version IS NOT NULL THEN old_version || ' -> ' || version
                    ELSE coalesce(version, old_version, '') END AS detail,
               seq
        FROM package_changes
        UNION ALL
        SELECT node, ts, datetime(ts, 'unixepoch'), 'file', path, action,
               CASE WHEN src_path IS NOT NULL THEN 'from ' || src_path
                    WHEN sha256 IS NOT NULL THEN 'sha256 ' || substr(sha256, 1, 12)
                    ELSE '' END,
               seq
        FROM file_changes
        UNION ALL
        SELECT node, ts, datetime(ts, 'unixepoch'), 'service', unit, active,
               coalesce(previous, '?') || ' -> ' || active
               || CASE WHEN result IS NOT NULL AND result != 'success' THEN ' (' || result || ')' ELSE '' END
               || CASE WHEN restarts THEN ' restarts=' || restarts ELSE '' END,
               seq
        FROM service_changes
        UNION ALL
        SELECT node, ts, datetime(ts, 'unixepoch'), 'device', sys_path, action,
               trim(subsystem || coalesce(' ' || dev_node, '') || coalesce(' ' || vendor, '')
                    || coalesce(' ' || model, '') || coalesce(' driver=' || driver, '')
                    || coalesce(' from ' || old_sys_path, '')),
               seq
        FROM device_changes
    """,
    "failed_units": """
        SELECT node, unit, sub, result, restarts, datetime(changed, 'unixepoch') AS since
        FROM services WHERE active = 'failed'
    """,
    "installed_packages": """
        SELECT node, manager, name, arch, version, manual, datetime(changed, 'unixepoch') AS changed
        FROM packages WHERE state = 'installed'
    """,
    "twin_summary": """
        SELECT n.name AS node,
               i.hostname, i.os, i.kernel, i.cpu_count, i.memory_bytes, i.primary_ip, i.tailscale_ip,
               datetime(i.updated, 'unixepoch') AS inventory_updated,
               (SELECT count(*) FROM packages p WHERE p.node = n.name AND p.state = 'installed') AS packages,
               (SELECT count(*) FROM pending_updates u WHERE u.node = n.name) AS pending_updates,
               (SELECT count(*) FROM pending_updates u WHERE u.node = n.name AND u.security) AS security_updates,
               (SELECT count(*) FROM services s WHERE s.node = n.name AND s.active = 'failed') AS failed_units,
               (SELECT count(*) FROM devices d WHERE d.node = n.name AND d.present) AS devices,
               (SELECT max(ts) FROM package_changes c WHERE c.node = n.name) AS last_package_change
        FROM nodes n LEFT JOIN inventory i ON i.node = n.name
    """,
    # events with every field in data: a log line is stored once, in logs, and its events row
    # keeps only kind and time (and a severity logs cannot hold); whoever reads a log event's
    # fields from data (the brain's context, an alert's causes) reads this. Rows stored before
    # keep their whole JSON and are shown as they are. Datasette's events view uses the same
    # expression (hub.twin.EVENT_DATA).
    "events_full": f"""
        SELECT e.id, e.node, e.seq, e.ts, e.kind, {EVENT_DATA} AS data
        FROM events e
    """,
}
