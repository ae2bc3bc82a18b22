"""GET /v1/kb/search on a real hub: node credentials and the admin token, nothing else."""

from __future__ import annotations

import os
import stat

import aiohttp

import hub.kb as kb
from hub.kb.token import admin_token


async def credential(hub, name="n1"):
    token = hub.enroll(name)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{hub.url}/v1/join", json={"token": token}) as r:
            assert r.status == 200, await r.text()
            return (await r.json())["credential"]


async def get(hub, params, bearer=None):
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.get(f"{hub.url}/v1/kb/search", params=params) as r:
            return r.status, await r.json()


async def test_search_endpoint_auth_and_results(hub):
    doc = await hub.writer.run(lambda db: kb.add_text(
        db, "Restart a wedged Jellyfin", "## Steps\nsystemctl restart jellyfin, then check the transcoder logs.",
        "test:jf", category="how-to", node="media1"))
    cred = await credential(hub, "media1")  # a node finds documents about itself (and #shared ones)
    status, body = await get(hub, {"q": "jellyfin transcoder"})
    assert status == 401 and "credential" in body["error"]
    status, body = await get(hub, {"q": "jellyfin"}, bearer="hln_not-a-real-one")
    assert status == 401
    status, body = await get(hub, {"q": "jellyfin"}, bearer="hla_guessed")
    assert status == 401
    status, body = await get(hub, {"q": "jellyfin transcoder"}, bearer=cred)
    assert status == 200, body
    (hit,) = body["results"]
    assert hit["document_id"] == doc and hit["heading_path"] == "Restart a wedged Jellyfin > Steps"
    assert "**transcoder**" in hit["snippet"]
    admin = admin_token(hub.data_dir)
    assert stat.S_IMODE(os.stat(hub.data_dir / "admin.token").st_mode) == 0o600
    status, body = await get(hub, {"q": "jellyfin", "category": "how-to", "node": "media1"}, bearer=admin)
    assert status == 200 and [r["document_id"] for r in body["results"]] == [doc]
    status, body = await get(hub, {"q": "jellyfin", "category": "storage"}, bearer=admin)
    assert status == 200 and body["results"] == []


async def test_search_endpoint_bad_parameters(hub):
    admin = admin_token(hub.data_dir)
    for params, needle in [({}, "missing query"), ({"q": "x", "limit": "many"}, "limit must be an integer"),
                           ({"q": "x", "limit": "1000"}, "between"), ({"q": "x", "since": "someday"}, "bad date"),
                           ({"q": "y" * 2000}, "too long")]:
        status, body = await get(hub, params, bearer=admin)
        assert status == 400 and needle in body["error"], (params, body)
