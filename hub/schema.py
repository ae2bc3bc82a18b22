"""The hub's schema: named migrations, recorded in the ``_migrations`` table and run on open.

Each capability keeps its own migrations in ``hub/<capability>/schema.py`` (the core's own,
nodes/events/metrics/files, are below). A migration is keyed by its function name alone, so
moving one between modules changes nothing for an existing database. All of them run in name
order, whichever module holds them: the number ranges keep a capability's own together
(m0xx core, m1xx twin, m2xx rules, m3xx proposals, m4xx brain, m5xx knowledge base, m6xx
docs, ansible and profiles). One that has run is never edited, only followed by a new one.

Views are not migrations: each has one definition, in the ``VIEWS`` of the module that owns it
(name -> SELECT), and ``migrate`` (re)creates a view whenever the SQL stored in the database
is not that definition, so changing a view is editing its one definition.
"""

from __future__ import annotations

import sqlite3
import textwrap
import time
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]

# Columns no reader but the hub's own auth code may see: a rule's SQL, the brain's `ask`,
# `db export` and Datasette all get NULL for them.
SECRET_COLUMNS = frozenset({("nodes", "credential_hash"), ("join_tokens", "token_hash"),
                            ("jobs", "signature")})
# What nodes printed (job and check output can carry file contents): the CLI shows it to the
# administrator; Datasette hides it too unless `datasette_private = false`.
PRIVATE_COLUMNS = SECRET_COLUMNS | {("jobs", "output"), ("proposals", "output"),
                                    ("proposals", "verify_output")}


def migration_set() -> tuple[list[Migration], Callable[[Migration], Migration]]:
    """A module's list of migrations and the decorator that appends to it."""
    found: list[Migration] = []

    def migration(fn: Migration) -> Migration:
        found.append(fn)
        return fn

    return found, migration


MIGRATIONS, migration = migration_set()


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


def all_migrations() -> list[Migration]:
    """The core's and every capability's migrations, in the order they run (by name)."""
    from hub.capabilities import modules

    found = list(MIGRATIONS)
    for m in modules("schema"):
        found.extend(m.MIGRATIONS)
    names = [fn.__name__ for fn in found]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuntimeError(f"two migrations share a name: {sorted(dupes)}")
    return sorted(found, key=lambda f: f.__name__)


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


@migration
def m005_samples_by_series_only(db: sqlite3.Connection) -> None:
    """Drop the ts indexes of samples, samples_1m and samples_1h: a fifth of a node-year on
    disk (bench storage). Every reader goes series first along the (series, ts) primary key,
    and rollups and retention now do too (hub/rollup.py)."""
    for table in ("samples", "samples_1m", "samples_1h"):
        db.execute(f"DROP INDEX IF EXISTS {table}_ts")


@migration
def m006_events_kind_node_ts(db: sqlite3.Connection) -> None:
    """A node's events of one kind in time order: "events per node and kind, last 24 hours"
    becomes one range count per (kind, node) instead of a day of index entries sorted into
    groups (datasette's event_counts: 70 -> 12 ms at 10 nodes, bench queries), and "this
    node's logs since T" a range. (kind, ts, node) stays for time ranges across nodes."""
    db.execute("CREATE INDEX IF NOT EXISTS events_kind_node_ts ON events(kind, node, ts)")


@migration
def m007_samples_10m(db: sqlite3.Connection) -> None:
    """10-minute aggregates, kept two days (hub/rollup.py): the fleet dashboard's charts are a
    day in 10-minute points, which read 1,440 rows per series from here instead of grouping
    14,400 one-minute rows each time the page is drawn."""
    db.execute("""
        CREATE TABLE IF NOT EXISTS samples_10m (
            series INTEGER NOT NULL REFERENCES series(id),
            ts INTEGER NOT NULL,
            avg REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (series, ts)
        ) WITHOUT ROWID""")


# Views: one definition each. hub.schema.migrate (re)creates a view after the migrations
# whenever its stored SQL differs from this; a migration never creates or drops one.
VIEWS = {
    "metrics": """
        SELECT s.node, s.name, s.labels, datetime(p.ts, 'unixepoch') AS time, p.ts, p.value
        FROM samples p JOIN series s ON s.id = p.series
    """,
    "metrics_1m": """
        SELECT s.node, s.name, s.labels, datetime(p.ts, 'unixepoch') AS time, p.ts,
               p.avg, p.min, p.max, p.n
        FROM samples_1m p JOIN series s ON s.id = p.series
    """,
    "metrics_1h": """
        SELECT s.node, s.name, s.labels, datetime(p.ts, 'unixepoch') AS time, p.ts,
               p.avg, p.min, p.max, p.n
        FROM samples_1h p JOIN series s ON s.id = p.series
    """,
    # Latest value of every series (raw window).
    "metrics_latest": """
        SELECT s.node, s.name, s.labels, s.key, p.ts, datetime(p.ts, 'unixepoch') AS time, p.value
        FROM series s JOIN samples p ON p.series = s.id
        WHERE p.ts = (SELECT max(ts) FROM samples WHERE series = s.id)
    """,
    # The distinct kinds by one index seek each (a loose index scan), so a time-range query
    # can say `kind IN (SELECT kind FROM event_kinds) AND ts > ...` and use events(kind, ts,
    # node) however many millions of events there are.
    "event_kinds": """
        WITH RECURSIVE k(kind) AS (
            SELECT min(kind) FROM events
            UNION ALL SELECT (SELECT min(kind) FROM events WHERE kind > k.kind) FROM k WHERE k.kind IS NOT NULL)
        SELECT kind FROM k WHERE kind IS NOT NULL
    """,
}


def all_views() -> dict[str, str]:
    """Every view, the core's and each capability's: name -> its CREATE VIEW statement."""
    from hub.capabilities import modules

    found: dict[str, str] = {}
    for views in [VIEWS, *(getattr(m, "VIEWS", {}) for m in modules("schema"))]:
        for name, select in views.items():
            if name in found:
                raise RuntimeError(f"two definitions of the view {name}")
            found[name] = f"CREATE VIEW {name} AS\n{textwrap.dedent(select).strip()}"
    return found


def _stale_views(db: sqlite3.Connection, views: dict[str, str]) -> list[str]:
    stored = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'").fetchall())
    return [name for name, sql in views.items() if stored.get(name) != sql]


def _in_transaction(db: sqlite3.Connection, fn: Callable[[], None]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        fn()
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def migrate(db: sqlite3.Connection) -> list[str]:
    """Run every migration not yet recorded, then (re)create every view whose stored SQL is
    not its definition in a ``VIEWS``; return the names of the migrations run.

    A view's definition lives in one place, never in a migration: views are dropped before
    migrations run (a migration may alter a table a view reads) and made afresh after them."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)"
    )
    done = {r[0] for r in db.execute("SELECT name FROM _migrations")}
    pending = [fn for fn in all_migrations() if fn.__name__ not in done]
    views = all_views()
    if not pending and not _stale_views(db, views):
        return []  # the usual open: nothing to write
    if pending:
        def drop() -> None:
            for name in views:
                db.execute(f"DROP VIEW IF EXISTS {name}")

        _in_transaction(db, drop)
    for fn in pending:
        def run(fn: Migration = fn) -> None:
            fn(db)
            db.execute("INSERT INTO _migrations (name, applied) VALUES (?, ?)",
                       (fn.__name__, time.time()))

        _in_transaction(db, run)

    def recreate() -> None:  # checked again under the write lock: another process may be first
        for name in _stale_views(db, views):
            db.execute(f"DROP VIEW IF EXISTS {name}")
            db.execute(views[name])

    _in_transaction(db, recreate)
    return [fn.__name__ for fn in pending]
