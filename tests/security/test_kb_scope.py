"""Finding 4: a node's credential finds only documents about that node, or those the
administrator tagged #shared; the admin token finds everything."""

from __future__ import annotations

import aiohttp

import hub.kb as kb
from hub.kb.token import admin_token


async def credential(hub, name):
    token = hub.enroll(name)
    async with aiohttp.ClientSession() as s, s.post(f"{hub.url}/v1/join", json={"token": token}) as r:
        assert r.status == 200
        return (await r.json())["credential"]


async def found(hub, bearer, **params) -> set[str]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {bearer}"}) as s, \
            s.get(f"{hub.url}/v1/kb/search", params={"limit": "50", "per_doc": "0", **params}) as r:
        body = await r.json()
        assert r.status == 200, body
        return {x["source"] for x in body["results"]}


async def test_nodes_see_only_their_own_and_shared_documents(hub):
    def add(db):
        kb.add_text(db, "Node web1", "web1 runs Debian 12, address 10.0.0.5, openssl 3.0.2 zebra",
                    "docs:node/web1", tags=("node", "self-doc"), node="web1")
        kb.add_text(db, "Node db1", "db1 runs Debian 12, address 10.0.0.6, postgres 15 zebra",
                    "docs:node/db1", tags=("node", "self-doc"), node="db1")
        kb.add_text(db, "Admin notes", "the zebra router password lives in the safe", "test:private")
        kb.add_text(db, "Runbook", "how to restart a zebra service", "test:shared", tags=("shared", "how-to"))

    await hub.writer.run(add)
    web1, db1 = await credential(hub, "web1"), await credential(hub, "db1")
    assert await found(hub, web1, q="zebra") == {"docs:node/web1", "test:shared"}
    assert await found(hub, db1, q="zebra debian") == {"docs:node/db1", "test:shared"}
    # asking for another node by name finds nothing, rather than its page
    assert await found(hub, web1, q="zebra", node="db1") == set()
    assert await found(hub, web1, q="postgres") == set()
    assert await found(hub, admin_token(hub.data_dir), q="zebra") == {
        "docs:node/web1", "docs:node/db1", "test:private", "test:shared"}
