"""Ordered schema migrations, recorded by name in the ``_migrations`` table and run on open.

Each feature owns a number range so parallel work never collides:
m0xx pipeline/storage, m1xx twin, m2xx rules, m3xx playbooks, m4xx brain, m5xx knowledge
base, m6xx docs/onboarding, m7xx fleet. Migrations run in number order; one that has
run is never edited, only followed by a new one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def script(db: sqlite3.Connection, sql: str) -> None:
    """Run statements one by one: executescript() would COMMIT the migration's transaction."""
    stmt = ""
    for line in sql.splitlines(keepends=True):
        stmt += line
        if sqlite3.complete_statement(stmt):
            db.execute(stmt)
            stmt = ""
    if stmt.strip():
        raise ValueError(f"incomplete SQL statement in migration: {stmt.strip()[:80]}")


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_initial(db: sqlite3.Connection) -> None:
    script(db,
        """
        CREATE TABLE nodes (
            name TEXT PRIMARY KEY,
            created REAL NOT NULL,
            credential_hash TEXT,
            last_seq INTEGER NOT NULL DEFAULT 0,
            last_seen REAL,
            clock_skew REAL,
            address TEXT,
            agent_version TEXT,
            tailnet_identity TEXT
        );
        CREATE UNIQUE INDEX nodes_credential ON nodes(credential_hash);
        CREATE TABLE join_tokens (
            token_hash TEXT PRIMARY KEY,
            node TEXT NOT NULL,
            created REAL NOT NULL,
            expires REAL NOT NULL,
            used REAL,
            used_from TEXT
        );
        -- Every event from every node, exactly once. data is the event as JSON.
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            node TEXT NOT NULL REFERENCES nodes(name),
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            kind TEXT NOT NULL,
            data TEXT NOT NULL,
            UNIQUE (node, seq)
        );
        CREATE INDEX events_kind_ts ON events(kind, ts);
        -- Frames the hub refused, newest kept (bounded by retention).
        CREATE TABLE ingest_errors (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            node TEXT,
            address TEXT,
            status INTEGER NOT NULL,
            reason TEXT NOT NULL
        );
        """
    )


@migration
def m002_metrics(db: sqlite3.Connection) -> None:
    script(db,
        """
        CREATE TABLE series (
            id INTEGER PRIMARY KEY,
            node TEXT NOT NULL REFERENCES nodes(name),
            key TEXT NOT NULL,
            name TEXT NOT NULL,
            labels TEXT NOT NULL DEFAULT '',
            UNIQUE (node, key)
        );
        CREATE TABLE samples (
            series INTEGER NOT NULL REFERENCES series(id),
            ts INTEGER NOT NULL,
            value REAL NOT NULL,
            PRIMARY KEY (series, ts)
        ) WITHOUT ROWID;
        CREATE INDEX samples_ts ON samples(ts);
        CREATE TABLE samples_1m (
            series INTEGER NOT NULL REFERENCES series(id),
            ts INTEGER NOT NULL,
            avg REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (series, ts)
        ) WITHOUT ROWID;
        CREATE INDEX samples_1m_ts ON samples_1m(ts);
        CREATE TABLE samples_1h (
            series INTEGER NOT NULL REFERENCES series(id),
            ts INTEGER NOT NULL,
            avg REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (series, ts)
        ) WITHOUT ROWID;
        CREATE INDEX samples_1h_ts ON samples_1h(ts);
        -- Rollup watermarks: everything before `done` has been aggregated into `target`.
        CREATE TABLE rollup_state (target TEXT PRIMARY KEY, done INTEGER NOT NULL);

        CREATE VIEW metrics AS
            SELECT s.node, s.name, s.labels, datetime(p.ts, 'unixepoch') AS time, p.ts, p.value
            FROM samples p JOIN series s ON s.id = p.series;
        CREATE VIEW metrics_1m AS
            SELECT s.node, s.name, s.labels, datetime(p.ts, 'unixepoch') AS time, p.ts,
                   p.avg, p.min, p.max, p.n
            FROM samples_1m p JOIN series s ON s.id = p.series;
        CREATE VIEW metrics_1h AS
            SELECT s.node, s.name, s.labels, datetime(p.ts, 'unixepoch') AS time, p.ts,
                   p.avg, p.min, p.max, p.n
            FROM samples_1h p JOIN series s ON s.id = p.series;
        -- Latest value of every series (raw window).
        CREATE VIEW metrics_latest AS
            SELECT s.node, s.name, s.labels, s.key, p.ts, datetime(p.ts, 'unixepoch') AS time, p.value
            FROM series s JOIN samples p ON p.series = s.id
            WHERE p.ts = (SELECT max(ts) FROM samples WHERE series = s.id);
        """
    )


@migration
def m003_files(db: sqlite3.Connection) -> None:
    script(db,
        """
        -- History of watched files: one row per change event.
        CREATE TABLE file_changes (
            id INTEGER PRIMARY KEY,
            node TEXT NOT NULL REFERENCES nodes(name),
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            action TEXT NOT NULL,
            path TEXT NOT NULL,
            src_path TEXT,
            size INTEGER, mode INTEGER, uid INTEGER, gid INTEGER,
            sha256 TEXT, old_sha256 TEXT,
            content_changed INTEGER NOT NULL,
            secret INTEGER NOT NULL,
            diff TEXT
        );
        CREATE INDEX file_changes_node_path ON file_changes(node, path);
        CREATE INDEX file_changes_ts ON file_changes(ts);
        -- Current state of watched files (the twin); deleted files keep a row with deleted=1.
        CREATE TABLE files (
            node TEXT NOT NULL REFERENCES nodes(name),
            path TEXT NOT NULL,
            size INTEGER, mode INTEGER, uid INTEGER, gid INTEGER, sha256 TEXT,
            secret INTEGER NOT NULL DEFAULT 0,
            deleted INTEGER NOT NULL DEFAULT 0,
            changed REAL NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (node, path)
        );
        """
    )


@migration
def m004_events_kind_ts_node(db: sqlite3.Connection) -> None:
    # Covers "what happened, per node and kind, in this time range" (Datasette, rules, the
    # brain) without a table lookup per row; it replaces the (kind, ts) index it extends.
    db.execute("CREATE INDEX events_kind_ts_node ON events(kind, ts, node)")
    db.execute("DROP INDEX events_kind_ts")
    # The distinct kinds by one index seek each (a loose index scan), so a time-range query
    # can say `kind IN (SELECT kind FROM event_kinds) AND ts > ...` and use the index above
    # however many millions of events there are.
    db.execute(
        "CREATE VIEW event_kinds AS WITH RECURSIVE k(kind) AS ("
        " SELECT min(kind) FROM events"
        " UNION ALL SELECT (SELECT min(kind) FROM events WHERE kind > k.kind) FROM k WHERE k.kind IS NOT NULL)"
        " SELECT kind FROM k WHERE kind IS NOT NULL"
    )


def migrate(db: sqlite3.Connection) -> list[str]:
    """Run every migration not yet recorded; return the names run."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)"
    )
    done = {r[0] for r in db.execute("SELECT name FROM _migrations")}
    ran = []
    for fn in sorted(MIGRATIONS, key=lambda f: f.__name__):
        if fn.__name__ in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            fn(db)
            db.execute(
                "INSERT INTO _migrations (name, applied) VALUES (?, ?)", (fn.__name__, time.time())
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        ran.append(fn.__name__)
    return ran


# --- m11x: the digital twin (current state per node; history in *_changes and events) ---


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

        -- What changed on each node, one timeline: packages, files, services, devices.
        CREATE VIEW changes AS
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
                        || coalesce(' ' || model, '') || coalesce(' driver=' || driver, '')),
                   seq
            FROM device_changes;

        CREATE VIEW failed_units AS
            SELECT node, unit, sub, result, restarts, datetime(changed, 'unixepoch') AS since
            FROM services WHERE active = 'failed';
        CREATE VIEW installed_packages AS
            SELECT node, manager, name, arch, version, manual, datetime(changed, 'unixepoch') AS changed
            FROM packages WHERE state = 'installed';
        """
    )


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


@migration
def m500_kb(db: sqlite3.Connection) -> None:
    """Knowledge base: documents, their passages (FTS5, kept in sync by triggers), tags,
    wikilinks, categories and the examples the classifier learns from. See docs/kb.md."""
    script(db,
        """
        CREATE TABLE kb_categories (
            name TEXT PRIMARY KEY,
            active INTEGER NOT NULL DEFAULT 1
        );
        INSERT INTO kb_categories (name) VALUES ('hardware'), ('networking'), ('storage'),
            ('services'), ('security'), ('how-to'), ('snippet'), ('note');
        -- One row per note, page, clipping or snippet. body is the readable text as markdown.
        CREATE TABLE kb_documents (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL UNIQUE,      -- absolute path, URL, or api:NAME
            kind TEXT NOT NULL,               -- markdown, text, html, code
            language TEXT,                    -- for code snippets
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            category TEXT NOT NULL REFERENCES kb_categories(name),
            category_source TEXT NOT NULL,    -- given, person, learned, rules, model, default
            node TEXT,
            date REAL NOT NULL,               -- front matter date, else file mtime, else added
            added REAL NOT NULL,
            updated REAL NOT NULL,
            frontmatter TEXT                  -- JSON
        );
        CREATE INDEX kb_documents_category ON kb_documents(category);
        CREATE INDEX kb_documents_node ON kb_documents(node);
        CREATE INDEX kb_documents_date ON kb_documents(date);
        CREATE TABLE kb_passages (
            id INTEGER PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES kb_documents(id) ON DELETE CASCADE,
            ord INTEGER NOT NULL,
            heading_path TEXT NOT NULL,       -- 'Title > Section > Subsection'
            text TEXT NOT NULL,
            UNIQUE (document_id, ord)
        );
        CREATE TABLE kb_tags (
            document_id INTEGER NOT NULL REFERENCES kb_documents(id) ON DELETE CASCADE,
            tag TEXT NOT NULL,
            PRIMARY KEY (document_id, tag)
        ) WITHOUT ROWID;
        CREATE INDEX kb_tags_tag ON kb_tags(tag);
        CREATE TABLE kb_links (
            document_id INTEGER NOT NULL REFERENCES kb_documents(id) ON DELETE CASCADE,
            target TEXT NOT NULL,             -- [[wikilink]] target as written
            PRIMARY KEY (document_id, target)
        ) WITHOUT ROWID;
        -- What the classifier learns from: categories a person set or a source declared.
        -- Kept (document_id NULL) when the document goes, so a lesson is not forgotten.
        CREATE TABLE kb_training (
            id INTEGER PRIMARY KEY,
            document_id INTEGER UNIQUE REFERENCES kb_documents(id) ON DELETE SET NULL,
            category TEXT NOT NULL REFERENCES kb_categories(name),
            source TEXT NOT NULL,             -- person, given
            text TEXT NOT NULL,
            created REAL NOT NULL
        );
        -- Optional passage embeddings for hybrid ranking (model = GGUF file sha256 prefix).
        CREATE TABLE kb_embeddings (
            passage_id INTEGER PRIMARY KEY REFERENCES kb_passages(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            vector BLOB NOT NULL
        );
        CREATE VIRTUAL TABLE kb_passages_fts USING fts5(
            heading_path, text, content='kb_passages', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        -- headings (which carry the title) weigh more than body text
        INSERT INTO kb_passages_fts (kb_passages_fts, rank) VALUES ('rank', 'bm25(3.0, 1.0)');
        CREATE TRIGGER kb_passages_ai AFTER INSERT ON kb_passages BEGIN
            INSERT INTO kb_passages_fts (rowid, heading_path, text)
            VALUES (new.id, new.heading_path, new.text);
        END;
        CREATE TRIGGER kb_passages_ad AFTER DELETE ON kb_passages BEGIN
            INSERT INTO kb_passages_fts (kb_passages_fts, rowid, heading_path, text)
            VALUES ('delete', old.id, old.heading_path, old.text);
        END;
        CREATE TRIGGER kb_passages_au AFTER UPDATE ON kb_passages BEGIN
            INSERT INTO kb_passages_fts (kb_passages_fts, rowid, heading_path, text)
            VALUES ('delete', old.id, old.heading_path, old.text);
            INSERT INTO kb_passages_fts (rowid, heading_path, text)
            VALUES (new.id, new.heading_path, new.text);
        END;
        CREATE VIEW kb_search_passages AS
            SELECT p.id AS passage_id, d.id AS document_id, d.title, p.heading_path, p.text,
                   d.category, d.node, d.source, datetime(d.date, 'unixepoch') AS date
            FROM kb_passages p JOIN kb_documents d ON d.id = p.document_id;
        """
    )


@migration
def m300_proposals(db: sqlite3.Connection) -> None:
    script(db,
        """
        -- Firing alerts that named playbooks, waiting for the proposal worker (written inside
        -- the rules engine's transaction, so they are cheap: the worker does the rest).
        CREATE TABLE proposal_requests (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            alert_id INTEGER,
            rule TEXT,
            node TEXT NOT NULL,
            alert TEXT NOT NULL,       -- the alert as JSON
            candidates TEXT NOT NULL,  -- [{"playbook": ..., "params": {...}}, ...] as JSON
            done REAL,
            outcome TEXT
        );
        CREATE INDEX proposal_requests_open ON proposal_requests(done, id);
        -- One proposed fix: a playbook with parameters for a node, and where it went.
        CREATE TABLE proposals (
            id INTEGER PRIMARY KEY,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            state TEXT NOT NULL,
            node TEXT NOT NULL,
            rule TEXT,
            alert_id INTEGER,
            request_id INTEGER REFERENCES proposal_requests(id),
            playbook TEXT NOT NULL,
            sha256 TEXT NOT NULL,      -- the script as the hub has it when proposed
            risk TEXT NOT NULL,
            params TEXT NOT NULL,      -- canonical JSON of the validated parameters
            why TEXT,
            evidence TEXT NOT NULL DEFAULT '[]',
            rationale TEXT,
            chosen_by TEXT NOT NULL DEFAULT 'rule',
            decision_id INTEGER,
            auto INTEGER NOT NULL DEFAULT 0,
            expires REAL,              -- an unapproved proposal expires then
            approved_by TEXT,
            approved_at REAL,
            approval_sha256 TEXT,      -- the approval is bound to these four
            approval_params TEXT,
            approval_node TEXT,
            approval_expires REAL,
            reason TEXT,               -- rejection reason, failure reason, escalation reason
            job_id TEXT,
            exit_code INTEGER,
            output TEXT,
            verify_job_id TEXT,
            verify_output TEXT,
            verify_deadline REAL
        );
        CREATE INDEX proposals_state ON proposals(state);
        CREATE INDEX proposals_rule ON proposals(rule, created);
        CREATE TABLE proposal_transitions (
            id INTEGER PRIMARY KEY,
            proposal_id INTEGER NOT NULL REFERENCES proposals(id),
            ts REAL NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            actor TEXT NOT NULL,
            note TEXT
        );
        CREATE INDEX proposal_transitions_proposal ON proposal_transitions(proposal_id, id);
        -- Signed jobs for nodes: mode run (approved), check (dry run) or verify.
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            proposal_id INTEGER REFERENCES proposals(id),
            node TEXT NOT NULL,
            mode TEXT NOT NULL,
            playbook TEXT NOT NULL,
            payload TEXT NOT NULL,     -- the exact signed bytes (canonical JSON)
            signature TEXT NOT NULL,   -- Ed25519 over payload, base64
            created REAL NOT NULL,
            expires REAL NOT NULL,
            delivered REAL,
            state TEXT NOT NULL,       -- queued, delivered, running, succeeded, failed, refused, timeout
            finished REAL,
            exit_code INTEGER,
            output TEXT,
            reason TEXT,
            duration_ms INTEGER
        );
        CREATE INDEX jobs_node_state ON jobs(node, state);
        -- Append-only, hash-chained record of every proposal, decision, dispatch and result.
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            proposal_id INTEGER,
            data TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
        CREATE VIEW proposals_open AS
            SELECT id, datetime(created, 'unixepoch') AS created, state, node, rule, playbook, risk,
                   params, why
            FROM proposals
            WHERE state IN ('proposed', 'approved', 'dispatched', 'running', 'succeeded');
        """
    )


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
        CREATE VIEW alerts_open AS
            SELECT id, rule, node, state, severity, summary, value, count,
                   datetime(first_seen, 'unixepoch') AS first_seen,
                   datetime(last_seen, 'unixepoch') AS last_seen, labels, annotations
            FROM alerts WHERE state != 'resolved';
        """
    )


# --- m6xx: self-documentation, configuration as code, onboarding ---------------------------


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


@migration
def m111_device_moves(db: sqlite3.Connection) -> None:
    """Renamed devices (kernel "move" events) remember where they were; the timeline says so."""
    script(db,
        """
        ALTER TABLE device_changes ADD COLUMN old_sys_path TEXT;
        DROP VIEW changes;
        CREATE VIEW changes AS
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
            FROM device_changes;
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
def m301_proposal_script(db: sqlite3.Connection) -> None:
    # The exact script text proposed (its SHA-256 is proposals.sha256), so `proposals show`
    # shows what was proposed even after the file on disk changed.
    db.execute("ALTER TABLE proposals ADD COLUMN script TEXT")


@migration
def m113_file_changes_node_ts(db: sqlite3.Connection) -> None:
    """The changes timeline filters file_changes by node and time, not by path."""
    db.execute("CREATE INDEX IF NOT EXISTS file_changes_node_ts ON file_changes(node, ts)")


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
        CREATE VIEW log_lines AS
            SELECT l.id, l.node, datetime(l.ts, 'unixepoch') AS time, l.ts, l.host, l.program,
                   l.pid, l.unit, l.facility, s.name AS severity, l.source, l.message
            FROM logs l LEFT JOIN log_severities s ON s.severity = l.severity;
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
        CREATE VIEW command_history AS
            SELECT id, node, datetime(ts, 'unixepoch') AS time, ts, user, cwd, command,
                   exit_code, duration_ms, tty, shell, redacted
            FROM commands;
        """
    )


@migration
def m114_twin_summary(db: sqlite3.Connection) -> None:
    """One row per node with the twin's headline numbers (a fleet overview for Datasette)."""
    script(db,
        """
        CREATE VIEW twin_summary AS
            SELECT n.name AS node,
                   i.hostname, i.os, i.kernel, i.cpu_count, i.memory_bytes, i.primary_ip, i.tailscale_ip,
                   datetime(i.updated, 'unixepoch') AS inventory_updated,
                   (SELECT count(*) FROM packages p WHERE p.node = n.name AND p.state = 'installed') AS packages,
                   (SELECT count(*) FROM pending_updates u WHERE u.node = n.name) AS pending_updates,
                   (SELECT count(*) FROM pending_updates u WHERE u.node = n.name AND u.security) AS security_updates,
                   (SELECT count(*) FROM services s WHERE s.node = n.name AND s.active = 'failed') AS failed_units,
                   (SELECT count(*) FROM devices d WHERE d.node = n.name AND d.present) AS devices,
                   (SELECT max(ts) FROM package_changes c WHERE c.node = n.name) AS last_package_change
            FROM nodes n LEFT JOIN inventory i ON i.node = n.name;
        """
    )
