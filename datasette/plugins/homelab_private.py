"""What Datasette must not show, and to whom it must not answer.

Datasette has no login. It listens on 127.0.0.1 only, but a web page in a browser on the hub
can still reach it by DNS rebinding (evil.example resolving to 127.0.0.1): so a request is
served only when its Host header names this machine (localhost, 127.0.0.1, ::1, or the
address Datasette listens on).

Credential hashes and job outputs read as NULL, in table pages, stored queries and any SQL
alike (an SQLite authorizer, so no query can get round it), and job_result events lose their
``output`` field, unless the administrator sets ``datasette_private = true``
(HOMELAB_HUB_DATASETTE_PRIVATE) in the hub's settings.

Either way ``events`` reads as ``events_full``: a log line's fields, stored once in ``logs``, are
back in its ``data``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from datasette import hookimpl
from hub.schema import PRIVATE_COLUMNS
from hub.twin import EVENT_DATA

HIDDEN = PRIVATE_COLUMNS
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1"}


def _show_private(datasette) -> bool:
    from hub.config import load_settings

    db = datasette.databases.get("homelab")
    if db is None or not db.path:
        return False
    try:
        return bool(load_settings(data_dir=Path(db.path).parent).datasette_private)
    except Exception:  # a broken hub.toml: fail closed
        return False


def _authorizer(action, arg1, arg2, dbname, source):
    if action == sqlite3.SQLITE_READ:
        if (arg1, arg2) in HIDDEN:
            return sqlite3.SQLITE_IGNORE  # the column reads as NULL
        if (arg1, arg2, dbname) == ("events", "data", "main") and source != "events":
            return sqlite3.SQLITE_IGNORE  # `main.events` or `main.events_full`, around the views below
    return sqlite3.SQLITE_OK


def _events_view(conn, private: bool) -> None:
    """A TEMP view named ``events`` (found before main.events by any query that says just
    ``events``) with log lines' fields back in ``data``; job output also travels in the
    job_result event, and unless ``private`` its ``output`` field is dropped. ``events_full``
    (a view in hub/twin/schema.py) reads the same, through it."""
    cols = [r[1] for r in conn.execute("PRAGMA main.table_info(events)")]
    if "data" not in cols or "kind" not in cols:
        return
    full = EVENT_DATA if _has(conn, "logs") else "e.data"
    data = full if private else f"CASE WHEN e.kind = 'job_result' THEN json_remove(e.data, '$.output') ELSE {full} END"
    select = ", ".join(f"{data} AS data" if c == "data" else f'e."{c}"' for c in cols)
    conn.execute(f"CREATE TEMP VIEW IF NOT EXISTS events AS SELECT {select} FROM main.events e")
    if _has(conn, "events_full"):
        conn.execute("CREATE TEMP VIEW IF NOT EXISTS events_full AS SELECT * FROM events")


def _has(conn, name: str) -> bool:
    return conn.execute("SELECT 1 FROM main.sqlite_master WHERE name = ?", (name,)).fetchone() is not None


@hookimpl
def prepare_connection(conn, database, datasette):
    if database == "homelab":
        private = _show_private(datasette)
        _events_view(conn, private)
        if not private:
            conn.set_authorizer(_authorizer)


def host_allowed(host: str, bound: str | None) -> bool:
    """Is the Host header (name[:port], [v6][:port]) this machine?"""
    if host.startswith("["):
        name = host[1:host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.lower().rstrip(".")
    return name in LOCAL_NAMES or (bool(bound) and name == bound)


@hookimpl
def asgi_wrapper(datasette):
    def wrap(app):
        async def guarded(scope, receive, send):
            if scope["type"] == "http":
                host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
                bound = (scope.get("server") or (None,))[0]
                if not host_allowed(host, bound):
                    body = json.dumps({"error": f"Host {host[:100]!r} is not this machine"}).encode()
                    await send({"type": "http.response.start", "status": 421,
                                "headers": [(b"content-type", b"application/json")]})
                    await send({"type": "http.response.body", "body": body})
                    return
            await app(scope, receive, send)

        return guarded

    return wrap
