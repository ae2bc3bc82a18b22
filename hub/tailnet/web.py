"""Tailnet identity of agents: recorded at join, checked on every later request.

When tailscaled's LocalAPI socket exists on the hub, a middleware asks it (``whois``) who
each agent request comes from. At ``/v1/join`` the answer becomes the node's enrolment
(``nodes.tailnet_identity``; re-joining replaces it). On every other ``/v1/`` request made
with a node credential, a peer whose tailnet node differs from the enrolment, or that is not
on the tailnet at all, is refused with 403 and the reason: a credential copied to another
machine does not work there. A node enrolled before the hub could ask (no identity yet)
gets its identity recorded on first contact.

Without the socket nothing is checked (a LAN hub: use TLS pinning instead). If tailscaled is
there but does not answer, requests are let through with a warning (``tailnet_unchecked``
in /metrics): the credential is still required, and a broken tailscaled should not stop a
fleet from reporting. ``tailnet_enforce = false`` records and logs mismatches without refusing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from hub import auth
from hub.errors import Forbidden, Unauthorized
from hub.keys import READ_DB, SETTINGS, STATS, WRITER
from hub.tailnet.local import DOWN_RETRY, Identity, LocalAPIUnavailable, Whois

log = logging.getLogger(__name__)

WHOIS = web.AppKey("tailnet_whois", Whois)
ENROLLED = web.AppKey("tailnet_enrolled", dict)  # node -> (expires, identity text or None)


def _peer(request: web.Request) -> tuple[str | None, int | None]:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return request.remote, None


def _node_of(request: web.Request) -> str | None:
    """The node behind the request's credential, or None (let the handler refuse it)."""
    try:  # never from CRED_CACHE: a revoked credential must stop at once
        cred = auth.bearer(request.headers.get("Authorization"))
    except Unauthorized:
        return None
    return auth.node_for(request.app[READ_DB], cred)


def _enrolled(app: web.Application, node: str) -> str | None:
    cache = app[ENROLLED]
    hit = cache.get(node)
    now = time.monotonic()
    if hit and hit[0] > now:
        return hit[1]
    row = app[READ_DB].execute("SELECT tailnet_identity FROM nodes WHERE name = ?", (node,)).fetchone()
    text = row[0] if row else None
    cache[node] = (now + 10.0, text)
    return text


async def _record(app: web.Application, node: str, ident: Identity | None, *, only_if_empty: bool) -> None:
    text = ident.to_text() if ident else None
    sql = "UPDATE nodes SET tailnet_identity = ? WHERE name = ?"
    if only_if_empty:
        sql += " AND tailnet_identity IS NULL"
    await app[WRITER].run(lambda db: db.execute(sql, (text, node)))
    app[ENROLLED].pop(node, None)
    log.info("node %s: tailnet identity %s", node, ident or "none (not a tailnet peer)")


async def _whois(request: web.Request) -> tuple[bool, Identity | None]:
    """(asked, identity). asked is False when tailscaled is absent or did not answer."""
    whois = request.app[WHOIS]
    if not whois.available():
        return False, None
    ip, port = _peer(request)
    if ip is None:
        return False, None
    if whois.down():
        request.app[STATS]["tailnet_unchecked"] += 1
        return False, None
    try:
        return True, await whois.lookup(ip, port)
    except LocalAPIUnavailable as e:
        request.app[STATS]["tailnet_unchecked"] += 1
        log.warning("cannot check tailnet identities for %.0fs: %s", DOWN_RETRY, e)
        return False, None


@web.middleware
async def tailnet_middleware(request: web.Request, handler):
    if not request.path.startswith("/v1/") or not request.app[WHOIS].available():
        return await handler(request)  # no tailscaled here: nothing to ask, no cost
    if request.path == "/v1/join":
        resp = await handler(request)
        if (resp.status == 200 and isinstance(resp, web.Response)
                and isinstance(resp.body, bytes | bytearray) and resp.body):
            asked, ident = await _whois(request)
            if asked:
                node = json.loads(resp.body)["node"]
                await _record(request.app, node, ident, only_if_empty=False)
        return resp
    node = _node_of(request)
    if node is None:
        return await handler(request)
    asked, ident = await _whois(request)
    if asked:
        check(request, node, ident)
        if ident is not None and _enrolled(request.app, node) is None:
            await _record(request.app, node, ident, only_if_empty=True)
    return await handler(request)


def check(request: web.Request, node: str, ident: Identity | None) -> None:
    recorded = _enrolled(request.app, node)
    if recorded is None:
        return
    want = Identity.from_text(recorded)
    ip, _port = _peer(request)
    if ident is None:
        reason = (f"node {node!r} is enrolled from tailnet device {want}, but this request comes from "
                  f"{ip}, which is not a tailnet peer")
    elif ident.id != want.id:
        reason = (f"tailnet identity {ident} does not match node {node!r}'s enrolment ({want}); "
                  f"re-enrol the node if it moved")
    else:
        return
    request.app[STATS]["tailnet_mismatch"] += 1
    if request.app[SETTINGS].tailnet_enforce:
        raise Forbidden(reason)
    log.warning("%s (tailnet_enforce is off: allowed)", reason)


async def _context(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[WHOIS].close()


def setup(app: web.Application) -> None:
    app[WHOIS] = Whois(app[SETTINGS].tailscale_socket)
    app[ENROLLED] = {}
    app.middlewares.append(tailnet_middleware)
    app.cleanup_ctx.append(_context)

