"""Under `homelab-hub up` the hub's own address is the first screen: the home page answers there
(the local agent's node listed, Datasette linked at the port `up` chose), and Datasette's home
page links back to it."""

from __future__ import annotations

import sys
import urllib.request

from tests.conftest import Proc, free_port, wait_for


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode()
    except OSError:
        return None


def test_up_serves_the_dashboard_and_datasette_links_it(tmp_path):
    hub_port = free_port()
    hub = f"http://127.0.0.1:{hub_port}"
    up = Proc([sys.executable, "-m", "hub", "up", "--data-dir", str(tmp_path / "data"), "--listen",
               f"127.0.0.1:{hub_port}", "--datasette-port", "0", "--watch", str(tmp_path),
               "--duration", "120"], tmp_path / "up.log", env={"HOMELAB_MODEL": "none"})
    try:
        wait_for(lambda: "datasette  http://127.0.0.1:" in up.output(), 60, what="up to print its addresses")
        ds = up.output().split("datasette  ", 1)[1].split()[0].rstrip("/")
        page = wait_for(lambda: (p := _get(f"{hub}/")) and "online</span>" in p and p, 60,
                        what="the home page listing the local agent online")
        assert f'href="{ds}/homelab"' in page  # the port `up` picked, not the 0 it was given
        home = wait_for(lambda: _get(f"{ds}/"), 60, what="datasette")
        assert f'href="{hub}/"' in home and f'href="{hub}/nodes/' in home
    finally:
        up.terminate(timeout=30)
    assert "Traceback" not in up.output()
