"""GET /v1/kb/search on the hub, for enrolled nodes and the administrator's token.

Searches run on their own read-only connection in a worker thread, so a slow query never
stalls ingest or the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator

from aiohttp import web

from hub import auth, kb
from hub.config import db_path
from hub.errors import BadRequest
from hub.ingest import authenticate
from hub.kb.token import is_admin
from hub.keys import SETTINGS, WRITER
from hub.store import connect

log = logging.getLogger(__name__)

KB_DB = web.AppKey("kb_db", sqlite3.Connection)
KB_LOCK = web.AppKey("kb_lock", threading.Lock)
MAX_LIMIT = 50


async def _kb_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    try:
        await app[WRITER].run(lambda db: kb.sync_categories(db, settings.kb_categories))
    except Exception:  # a bad category list must not keep the hub from serving
        log.exception("knowledge base: cannot apply kb_categories")
    app[KB_DB] = connect(db_path(settings.data_dir), readonly=True)
    app[KB_LOCK] = threading.Lock()
    yield
    app[KB_DB].close()


async def _who(request: web.Request) -> str:
    """'admin' for the admin token, else the node the credential belongs to (or 401)."""
    presented = auth.bearer(request.headers.get("Authorization"))
    if presented.startswith("hla_") and is_admin(request.app[SETTINGS].data_dir, presented):
        return "admin"
    return await authenticate(request)


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw[:40]!r}") from None
    if not lo <= v <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}")
    return v


async def search(request: web.Request) -> web.Response:
    who = await _who(request)
    q = request.query.get("q", "").strip()
    if not q:
        raise BadRequest("missing query: GET /v1/kb/search?q=...")
    limit = _int(request, "limit", 5, 1, MAX_LIMIT)
    per_doc = _int(request, "per_doc", 1, 0, MAX_LIMIT)
    hybrid = request.app[SETTINGS].kb_hybrid
    filters = {k: request.query.get(k) or None for k in ("category", "tag", "node", "since", "until")}
    db, lock = request.app[KB_DB], request.app[KB_LOCK]

    def run():
        with lock:
            return kb.search(db, q, limit, per_document=per_doc, hybrid=hybrid,
                             visible_to=None if who == "admin" else who, **filters)

    results = await asyncio.get_running_loop().run_in_executor(None, run)
    log.debug("kb search by %s: %r -> %d results", who, q, len(results))
    return web.json_response({"query": q, "results": results})


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_kb_ctx)
    app.router.add_get("/v1/kb/search", search)
