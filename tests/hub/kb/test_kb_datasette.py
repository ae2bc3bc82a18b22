"""The Datasette fragment and markdown plugin against a real knowledge base."""

from __future__ import annotations

import yaml
from datasette.app import Datasette

import hub.kb as kb
from hub import paths
from hub.store import open_db


async def test_fragment_queries_and_markdown_rendering(tmp_path):
    db = open_db(tmp_path / "homelab.db")
    doc = kb.add_text(db, "Caddy notes", "# Caddy notes\n\n## TLS\nCaddy renews **certificates**.\n\n"
                      "<script>alert(1)</script> [bad](javascript:alert(1))", "t:1", category="services")
    db.close()
    d = paths.shipped("datasette")
    meta = yaml.safe_load((d / "metadata.yml").read_text())
    ds = Datasette([str(tmp_path / "homelab.db")], metadata=meta, plugins_dir=str(d / "plugins"))
    r = await ds.client.get("/homelab/kb_search.json?_shape=array&q=renews certificates&category=")
    assert r.status_code == 200, r.text
    rows = r.json()
    assert rows[0]["document"] == doc and rows[0]["heading_path"] == "Caddy notes > TLS"
    assert "[certificates]" in rows[0]["snippet"]
    r = await ds.client.get("/homelab/kb_search.json?_shape=array&q=renews&category=storage")
    assert r.json() == []
    r = await ds.client.get(f"/homelab/kb_document?id={doc}")
    assert r.status_code == 200
    assert "<strong>certificates</strong>" in r.text and "<h2>TLS</h2>" in r.text
    assert "<script>alert(1)</script>" not in r.text and 'href="javascript:' not in r.text
    r = await ds.client.get("/homelab/kb_documents.json?_facet=category")
    assert r.status_code == 200
    r = await ds.client.get("/homelab/kb_by_category.json?_shape=array")
    assert {"category": "services", "documents": 1, "set_by_a_person": 0} in r.json()
