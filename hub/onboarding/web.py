"""Serves new machines what they need to join, from the hub itself (see hub/onboarding/bundle.py):

- ``GET /bootstrap.sh?token=T``: the install script for the token's node (text/x-shellscript;
  a refusal is also a script, which prints the reason and exits 1 when piped into sh);
- ``GET /bootstrap/index.json?token=T``: names and SHA-256 of the files below;
- ``GET /bootstrap/files/NAME?token=T`` and ``GET /agent.whl?token=T``: the wheels.

Every route needs a join token that has not expired. The first request builds the
artifacts in a worker thread (pip; minutes without a warm cache); later ones are file reads.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from hub.errors import HubError, NotFound
from hub.keys import READ_DB, SETTINGS
from hub.onboarding.bundle import Artifacts, token_node
from hub.onboarding.script import error_script, render_script

log = logging.getLogger(__name__)

ARTIFACTS = web.AppKey("bootstrap_artifacts", Artifacts)
BUILD_LOCK = web.AppKey("bootstrap_lock", asyncio.Lock)
SCRIPT_TYPE = "text/x-shellscript"


def artifacts_for(settings) -> Artifacts:
    base = settings.bootstrap_dir or settings.data_dir / "bootstrap"
    return Artifacts(base, settings.wheelhouse)


async def _ensure(app: web.Application) -> dict:
    arts = app[ARTIFACTS]
    if arts.ready():
        return arts.index()
    async with app[BUILD_LOCK]:
        return await asyncio.get_running_loop().run_in_executor(None, arts.ensure)


def _hub_url(request: web.Request) -> str:
    """The URL the node used to reach us is one it can reach; public_url wins if set."""
    configured = request.app[SETTINGS].public_url
    return configured.rstrip("/") if configured else str(request.url.origin())


def _fingerprint(app: web.Application) -> str:
    s = app[SETTINGS]
    if not s.tls:
        return ""
    from hub import tls

    return tls.fingerprint(s.data_dir)


async def bootstrap_sh(request: web.Request) -> web.Response:
    token = request.query.get("token", "")
    try:
        node = token_node(request.app[READ_DB], token)
        index = await _ensure(request.app)
        body = render_script(_hub_url(request), token, node, index, _fingerprint(request.app))
    except HubError as e:
        log.info("bootstrap refused for %s: %s", request.remote, e)
        return web.Response(text=error_script(str(e)), status=e.status, content_type=SCRIPT_TYPE)
    except ValueError as e:
        return web.Response(text=error_script(str(e)), status=400, content_type=SCRIPT_TYPE)
    log.info("bootstrap script for node %s sent to %s", node, request.remote)
    return web.Response(text=body, content_type=SCRIPT_TYPE)


async def index_json(request: web.Request) -> web.Response:
    token_node(request.app[READ_DB], request.query.get("token", ""))
    return web.json_response(await _ensure(request.app))


async def file(request: web.Request) -> web.StreamResponse:
    token_node(request.app[READ_DB], request.query.get("token", ""))
    index = await _ensure(request.app)
    name = request.match_info.get("name") or index["agent_wheel"]
    try:
        path = request.app[ARTIFACTS].path_of(name)
    except KeyError:
        raise NotFound(f"no bootstrap file {name!r}") from None
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


def setup(app: web.Application) -> None:
    app[ARTIFACTS] = artifacts_for(app[SETTINGS])
    app[BUILD_LOCK] = asyncio.Lock()
    app.router.add_get("/bootstrap.sh", bootstrap_sh)
    app.router.add_get("/bootstrap/index.json", index_json)
    app.router.add_get("/bootstrap/files/{name}", file)
    app.router.add_get("/agent.whl", file)
