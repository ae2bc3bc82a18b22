"""The hub's own pages on its listener: `/` (the fleet), `/nodes/{name}` (one node's history),
`/dashboard/api/nodes/{name}/series` (the charts' data) and the vendored chart library.

Pages are rendered on the server (readable without JavaScript, refreshed by a meta refresh);
the node page's charts are drawn in the browser by uPlot from the JSON endpoint. Queries run
on the dashboard's own read-only connection in a worker thread, so a long range never stalls
ingest or the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import jinja2
from aiohttp import web

from hub.config import db_path
from hub.dashboard import access, docs, health, overview, series
from hub.errors import HubError
from hub.keys import SETTINGS, WRITER
from hub.nodes import require_node
from hub.store import connect
from hub.tasks import running

log = logging.getLogger(__name__)
DB = web.AppKey("dashboard_db", sqlite3.Connection)
LOCK = web.AppKey("dashboard_lock", threading.Lock)
HOSTS = web.AppKey("dashboard_hosts", set)
STATIC = Path(__file__).parent / "static"
ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("hub.dashboard", "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined,
)
# Everything the pages load comes from the hub itself: no CDN (the hub may be offline), no
# inline script, nothing framed.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self';"
                               " img-src 'self' data:; connect-src 'self'; frame-ancestors 'none';"
                               " base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _when(ts) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _pct(v) -> str:
    return "" if v is None else f"{v * 100:.0f}%"


def _human(v, unit: str) -> str:
    if unit == "B/s":
        for u in ("B/s", "KB/s", "MB/s", "GB/s"):
            if abs(v) < 1000 or u == "GB/s":
                return f"{v:.0f} {u}" if u == "B/s" else f"{v:.1f} {u}"
            v /= 1000
    return f"{v:.1f}{unit if unit in ('%', '°C') else ''}"


ENV.filters.update(when=_when, pct=_pct, human=_human, urlpart=lambda s: quote(str(s), safe=""))


async def _ctx(app: web.Application) -> AsyncIterator[None]:
    from hub import tailnet
    from hub.server import public_url

    settings = app[SETTINGS]
    status = await asyncio.get_running_loop().run_in_executor(None, tailnet.localapi_status)
    app[HOSTS] = access.allowed_hosts(public_url(settings), status)
    app[DB] = connect(db_path(settings.data_dir), readonly=True)
    app[LOCK] = threading.Lock()
    url_file = settings.data_dir / health.URL_FILE
    url_file.write_text(_local_url(settings) + "\n")  # for `status` to find this hub's /metrics
    async with running(_record_sizes(app), "db-sizes"):
        yield
    url_file.unlink(missing_ok=True)
    app[DB].close()


def _local_url(settings) -> str:
    from hub.server import listen_of, parse_listen

    host, port = parse_listen(listen_of(settings))
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if settings.tls else 'http'}://{host}:{port}"


async def _record_sizes(app: web.Application) -> None:
    """The database size once an hour, for the growth `homelab-hub status` reports."""
    data_dir = app[SETTINGS].data_dir
    while True:
        try:
            await app[WRITER].run(lambda db: health.record_size(db, data_dir, time.time()))
        except Exception:  # noqa: BLE001 - a missed sample must not stop the next
            log.exception("recording the database size failed")
        await asyncio.sleep(health.SIZE_EVERY)


async def _read(request: web.Request, fn):
    db, lock = request.app[DB], request.app[LOCK]

    def run():
        with lock:
            return fn(db)

    return await asyncio.get_running_loop().run_in_executor(None, run)


def _page(name: str, status: int = 200, **ctx) -> web.Response:
    body = ENV.get_template(name).render(**ctx)
    return web.Response(text=body, status=status, content_type="text/html", headers=HEADERS)


def _guard(request: web.Request, api: bool = False) -> None:
    """Host check (DNS rebinding), then the administrator check."""
    if not access.host_ok(request.host, request.app[HOSTS]):
        raise web.HTTPMisdirectedRequest(text=f"this hub does not answer to Host {request.host[:80]!r}")
    if access.is_admin(request, request.app[SETTINGS].data_dir):
        return
    if api:
        raise web.HTTPUnauthorized(text="the dashboard is for the administrator: sign in at /login",
                                   headers=HEADERS)
    raise web.HTTPSeeOther("/login?next=" + quote(request.path_qs, safe=""))


async def home(request: web.Request) -> web.Response:
    _guard(request)
    settings = request.app[SETTINGS]
    now = time.time()

    def read(db):
        return {"nodes": overview.nodes(db, now, settings.offline_after),
                "alerts": overview.firing_alerts(db),
                "proposals": overview.awaiting_approval(db),
                "changes": overview.recent_changes(db, now - 7 * 86400)}

    data = await _read(request, read)
    return _page("home.html", now=now, refresh=30, datasette=_datasette_url(settings), **data)


def _datasette_url(settings) -> str | None:
    port = getattr(settings, "datasette_port", 0)
    return f"http://127.0.0.1:{port}/homelab" if port else None


async def node_page(request: web.Request) -> web.Response:
    _guard(request)
    name = request.match_info["name"]
    rng = request.query.get("range", "24h")
    if rng not in series.RANGES:
        rng = "24h"
    settings = request.app[SETTINGS]
    now = time.time()
    start, end = series.parse_range(rng, now)

    def read(db):
        require_node(db, name)
        data = series.node_series(db, name, start, end, now, settings)
        return data, series.time_marks(db, name, start, end), overview.nodes(db, now, settings.offline_after)

    try:
        data, marks, nodes = await _read(request, read)
    except HubError as e:
        return _page("error.html", status=e.status, message=str(e))
    node = next((n for n in nodes if n["name"] == name), {"name": name})
    summary = [(c["title"], c["unit"], line["label"], _stats(line["values"])) for c in data["charts"]
               for line in c["lines"]]
    return _page("node.html", node=node, range=rng, ranges=list(series.RANGES), data=data,
                 marks=marks[-50:], summary=summary, refresh=60 if rng in ("1h", "6h") else 300, js_refresh=True,
                 api=f"/dashboard/api/nodes/{quote(name, safe='')}/series")


def _stats(values: list) -> dict | None:
    vs = [v for v in values if v is not None]
    if not vs:
        return None
    return {"last": vs[-1], "min": min(vs), "avg": sum(vs) / len(vs), "max": max(vs)}


async def series_api(request: web.Request) -> web.Response:
    _guard(request, api=True)
    name = request.match_info["name"]
    settings = request.app[SETTINGS]
    now = time.time()
    q = request.query
    start, end = series.parse_range(q.get("range"), now, q.get("from"), q.get("to"))

    def read(db):
        require_node(db, name)
        data = series.node_series(db, name, start, end, now, settings)
        data["marks"] = series.time_marks(db, name, start, end)
        return data

    data = await _read(request, read)
    return web.Response(text=json.dumps(data, separators=(",", ":")),
                        content_type="application/json", headers=HEADERS)


async def login_form(request: web.Request) -> web.Response:
    if not access.host_ok(request.host, request.app[HOSTS]):
        raise web.HTTPMisdirectedRequest(text="unknown Host")
    return _page("login.html", next=_safe_next(request.query.get("next")), error=None)


async def login(request: web.Request) -> web.Response:
    if not access.host_ok(request.host, request.app[HOSTS]):
        raise web.HTTPMisdirectedRequest(text="unknown Host")
    origin = request.headers.get("Origin")
    if origin and origin != "null" and access.host_only(origin.split("//", 1)[-1]) != access.host_only(request.host):
        raise web.HTTPForbidden(text="cross-site sign-in refused")
    form = await request.post()
    nxt = _safe_next(str(form.get("next") or ""))
    settings = request.app[SETTINGS]
    if not access.token_ok(settings.data_dir, str(form.get("token") or "")):
        return _page("login.html", status=401, next=nxt,
                     error="That is not this hub's admin token (homelab-hub kb token prints it).")
    resp = web.HTTPSeeOther(nxt)
    from hub.kb import existing_token

    resp.set_cookie(access.COOKIE, access.session_value(existing_token(settings.data_dir) or ""),
                    httponly=True, samesite="Strict", secure=bool(settings.tls), path="/",
                    max_age=30 * 86400)
    raise resp


def _safe_next(nxt: str | None) -> str:
    """Only a path on this hub: never '//evil.example' or 'https://...' (an open redirect)."""
    if not nxt or not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:
        return "/"
    return nxt


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=86400",
                                           "X-Content-Type-Options": "nosniff"})


async def docs_page(request: web.Request) -> web.StreamResponse:
    _guard(request)
    name = request.match_info.get("name", "")
    if not name:
        return _page("docs.html", title="Documentation", body=None, pages=docs.pages())
    body = docs.page(name)
    if body is None:
        raise web.HTTPNotFound(text=f"no documentation page {name[:60]!r}")
    # links between pages are relative (rules.md, img/node.png): they resolve under /docs/
    return _page("docs.html", title=name, body=body, pages=[])


async def docs_image(request: web.Request) -> web.StreamResponse:
    _guard(request)
    path = docs.image(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"X-Content-Type-Options": "nosniff"})


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_ctx)
    app.router.add_get("/", home)
    app.router.add_get("/nodes/{name}", node_page)
    app.router.add_get("/dashboard/api/nodes/{name}/series", series_api)
    app.router.add_get("/dashboard/static/{name}", static)
    app.router.add_get("/docs/", docs_page)
    app.router.add_get("/docs/{name}", docs_page)
    app.router.add_get("/docs/img/{name}", docs_image)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
