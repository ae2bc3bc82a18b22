"""What Datasette must not show, and to whom it must not answer.

Datasette has no login. It listens on 127.0.0.1 only, but a web page in a browser on the hub
can still reach it by DNS rebinding (evil.example resolving to 127.0.0.1): so a request is
served only when its Host header names this machine (localhost, 127.0.0.1, ::1, or the
address Datasette listens on).

Credential hashes and job outputs read as NULL, in table pages, stored queries and any SQL
alike (an SQLite authorizer, so no query can get round it), and job_result events lose their
``output`` field, unless the administrator sets ``datasette_private = true``
(HOMELAB_HUB_DATASETTE_PRIVATE) in the hub's settings.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from datasette import hookimpl
from hub.schema import PRIVATE_COLUMNS

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
        if (arg1, arg2, dbname, source) == ("events", "data", "main", None):
            return sqlite3.SQLITE_IGNORE  # `main.events` named directly, around the view below
    return sqlite3.SQLITE_OK


def _events_without_job_output(conn) -> None:
    """Job output also travels in the job_result event: a TEMP view named ``events`` (found
    before main.events by any query that says just ``events``) drops its ``output`` field."""
    cols = [r[1] for r in conn.execute("PRAGMA main.table_info(events)")]
    if "data" not in cols or "kind" not in cols:
        return
    select = ", ".join(
        "CASE WHEN kind = 'job_result' THEN json_remove(data, '$.output') ELSE data END AS data"
        if c == "data" else f'"{c}"' for c in cols)
    conn.execute(f"CREATE TEMP VIEW IF NOT EXISTS events AS SELECT {select} FROM main.events")


@hookimpl
def prepare_connection(conn, database, datasette):
    if database == "homelab" and not _show_private(datasette):
        _events_without_job_output(conn)
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
