"""Datasette for people, over the seeded month: its home page links the hub's pages, the nodes
and the stored queries; times read as dates; JSON is indented; secrets and job output stay out
of the way until asked for (the JSON export keeps every raw value)."""

from __future__ import annotations

import json
import re
import sqlite3
import urllib.request

import pytest

from hub.config import load_settings
from hub.server import datasette_argv
from tests.conftest import Proc, free_port, query, wait_for
from tests.dashboard.seed import NODES


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.read().decode()
    except OSError:
        return None


@pytest.fixture
def datasette(fleet_dir, tmp_path):
    db = sqlite3.connect(fleet_dir / "homelab.db")
    with db:  # a finished job with output, as a node reports one
        db.execute("INSERT INTO jobs (id, node, mode, playbook, payload, signature, created, expires, state, output)"
                   " VALUES ('j1', 'nas01', 'run', 'disk-report', '{}', 'c2lnbmF0dXJl', 1796000000.5, 1796003600,"
                   " 'succeeded', ?)", ("\n".join(f"line {i}" for i in range(40)),))
    db.close()
    port = free_port()
    p = Proc(datasette_argv(load_settings(data_dir=fleet_dir), port), tmp_path / "datasette.log",
             env={"HOMELAB_HUB_URL": "http://127.0.0.1:8470"})
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _get(f"{base}/-/versions.json") is not None or not p.alive(), 60, what="datasette")
    assert p.alive(), p.output()
    yield base
    p.terminate()


@pytest.fixture
def fleet_dir(seeded_template, tmp_path):
    import shutil

    d = tmp_path / "hub"
    shutil.copytree(seeded_template, d)
    return d


def test_home_page_links_the_dashboard_nodes_and_queries(datasette):
    page = _get(f"{datasette}/")
    assert 'href="http://127.0.0.1:8470/"' in page
    for n in NODES:
        assert f'href="http://127.0.0.1:8470/nodes/{n}"' in page
    assert 'href="/homelab/what_changed"' in page and "/-/search" in page


def test_times_read_as_dates_and_exports_keep_the_numbers(datasette):
    page = _get(f"{datasette}/homelab/alerts")
    assert re.search(r'<time datetime="20\d\d-\d\d-\d\dT[^"]+" title="1\d{9}\.?\d*">20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>', page)
    assert not re.search(r">\s*1\d{9}\.\d+\s*<", page), "a raw epoch float is still shown"
    rows = json.loads(_get(f"{datasette}/homelab/alerts.json?_shape=array"))
    assert isinstance(rows[0]["first_seen"], float)


def test_json_is_indented_and_secrets_and_outputs_are_hidden(datasette, fleet_dir):
    page = _get(f"{datasette}/homelab/alerts")
    assert '<pre class="json"' in page and "&#34;node&#34;: &#34;nas01&#34;" in page
    # credential hashes and job outputs read as null in every page and export (docs/security.md)
    nodes = json.loads(_get(f"{datasette}/homelab/nodes.json?_shape=array"))
    assert nodes and all(r["credential_hash"] is None for r in nodes)
    stored = query(fleet_dir, "SELECT credential_hash FROM nodes")
    assert stored and all(h and h not in _get(f"{datasette}/homelab/nodes") for (h,) in stored)
    jobs = json.loads(_get(f"{datasette}/homelab/jobs.json?_shape=array"))
    assert jobs and all(j["output"] is None for j in jobs), jobs[:1]
