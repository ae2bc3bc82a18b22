"""HTTP handlers for agents: join, hello, ingest. Errors are raised as HubError and turned
into JSON responses by the middleware in app.py."""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from agent import wire
from hub import auth
from hub.errors import BadRequest, Forbidden, Unauthorized
from hub.keys import CRED_CACHE, READ_DB, SIGNING_KEY, STATS, WRITER

routes = web.RouteTableDef()
_json = msgspec.json.Encoder()


async def authenticate(request: web.Request) -> str:
    """Return the node name for the request's credential. Looked up every time (one indexed
    read, microseconds) so that a revoked or replaced credential stops at once; CRED_CACHE
    only remembers the answer as a hint for middlewares that run after this handler."""
    credential = auth.bearer(request.headers.get("Authorization"))
    node = auth.node_for(request.app[READ_DB], credential)
    if node is None:
        raise Unauthorized("unknown or revoked node credential")
    cache = request.app[CRED_CACHE]
    if len(cache) > 10_000:
        cache.clear()
    cache[credential] = (node, time.monotonic() + 10.0)
    return node


@routes.post("/v1/join")
async def join(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        token = body["token"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise BadRequest("join expects JSON {\"token\": \"...\"}") from None
    if not isinstance(token, str) or len(token) > 200:
        raise BadRequest("token must be a string")
    peer = request.remote
    node, credential = await request.app[WRITER].run(lambda db: auth.redeem(db, token, peer))
    request.app[STATS]["joins"] += 1
    return web.json_response({
        "node": node,
        "credential": credential,
        "hub_public_key": auth.public_key_b64(request.app[SIGNING_KEY]),
        # a re-enrolled node with a fresh spool must number after what the hub already has
        "last_seq": request.app[WRITER].last_seq.get(node, 0),
        "wire_version": wire.WIRE_VERSION,
    })


@routes.get("/v1/hello")
async def hello(request: web.Request) -> web.Response:
    node = await authenticate(request)
    return web.json_response({
        "node": node,
        "last_seq": request.app[WRITER].last_seq.get(node, 0),
        "time": time.time(),
    })


def _json_of(frame: wire.Frame) -> list[str]:
    """Each event as JSON TEXT (not BLOB: SQLite's JSON functions read a BLOB as JSONB)."""
    if frame.typed:  # one C call for the whole batch; JSON escapes newlines inside strings
        return _json.encode_lines(frame.events).decode().split("\n")[:-1]
    enc = _json.encode
    out = []
    for i, e in enumerate(frame.events):
        if not isinstance(e, wire.Unknown):
            out.append(enc(e).decode())
            continue
        try:  # a kind this hub does not know is kept as JSON; some msgpack has no JSON form
            out.append(enc(msgspec.msgpack.decode(e.raw or b"")).decode())
        except (TypeError, ValueError, msgspec.MsgspecError, RecursionError) as err:
            raise BadRequest(f"events[{i}] (kind {e.kind!r}) cannot be stored as JSON: {err}") from None
    return out


@routes.post("/v1/ingest")
async def ingest(request: web.Request) -> web.Response:
    node = await authenticate(request)
    if request.content_length is not None and request.content_length > wire.MAX_BATCH_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=wire.MAX_BATCH_BYTES, actual_size=request.content_length)
    body = await request.read()
    try:
        frame = wire.decode_batch(body)
    except wire.FrameError as e:
        raise BadRequest(str(e)) from None
    if frame.node != node:
        raise Forbidden(f"credential belongs to node {node!r}, batch claims {frame.node!r}")
    if not frame.typed:
        request.app[STATS]["unknown_kind_events"] += sum(isinstance(e, wire.Unknown) for e in frame.events)
    result = await request.app[WRITER].ingest(node, frame, _json_of(frame), request.remote)
    # msgspec, not json_response's json.dumps: one reply per request is a visible share of
    # the hub's CPU at fleet scale (bench fleet)
    return web.Response(body=_json.encode({"ack": result.ack, "stored": result.stored,
                                           "duplicates": result.duplicates}),
                        content_type="application/json")


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "queue": request.app[WRITER].depth})
