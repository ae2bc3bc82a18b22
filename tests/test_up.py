"""`homelab-hub up`: the README's main job, as a user runs it (real processes, loopback)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import Proc, free_port, query, wait_for


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_up_runs_hub_agent_and_datasette(tmp_path):
    data, watched = tmp_path / "data", tmp_path / "etc"
    watched.mkdir()
    (watched / "app.conf").write_text("a = 1\n")
    hub_port, ds_port = free_port(), free_port()
    up = Proc([sys.executable, "-m", "hub", "up", "--data-dir", str(data), "--listen", f"127.0.0.1:{hub_port}",
               "--datasette-port", str(ds_port), "--watch", str(watched), "--duration", "120"], tmp_path / "up.log")
    try:
        wait_for(lambda: "datasette  http://127.0.0.1:" in up.output(), 60, what="up to print its addresses")
        out = up.output()
        assert f"hub        http://127.0.0.1:{hub_port}" in out and str(data / "homelab.db") in out
        # the local agent joined by itself and ships
        wait_for(lambda: query(data, "SELECT count(*) FROM events WHERE kind = 'notice' OR kind = 'inventory'")[0][0] > 0,
                 60, what="the local agent's first events")
        time.sleep(2)
        (watched / "app.conf").write_text("a = 2\n")
        wait_for(lambda: query(data, "SELECT count(*) FROM file_changes WHERE path LIKE '%app.conf'")[0][0] == 1,
                 30, what="the file change to arrive")
        nodes = subprocess.run([sys.executable, "-m", "hub", "nodes", "--data-dir", str(data), "--json"],
                               capture_output=True, text=True, check=True).stdout
        node = json.loads(nodes.splitlines()[0])
        assert node["state"] == "online"
        # Datasette serves the same database read-only, with the shipped stored queries
        base = f"http://127.0.0.1:{ds_port}"
        wait_for(lambda: _ok(f"{base}/-/versions.json"), 60, what="datasette")
        health = get_json(f"{base}/homelab/node_health.json?_shape=array")
        assert [h["node"] for h in health] == [node["name"]] and health[0]["state"] == "online"
        changes = get_json(f"{base}/homelab/file_changes_since.json?_shape=array&node=&since=")
        assert changes[0]["path"].endswith("app.conf") and "+a = 2" in changes[0]["diff"]
        with pytest.raises(urllib.error.HTTPError) as refused:  # read-only: writes are refused
            urllib.request.urlopen(f"{base}/homelab.json?sql=delete+from+events", timeout=10)
        assert refused.value.code == 400
        refused.value.close()
        assert query(data, "SELECT count(*) FROM events")[0][0] > 0
    finally:
        up.terminate(timeout=30)
    assert "Traceback" not in up.output()


def _ok(url: str) -> bool:
    try:
        get_json(url)
        return True
    except OSError:
        return False
