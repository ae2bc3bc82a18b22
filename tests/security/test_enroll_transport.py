"""Finding 7: `enroll` refuses to print a plain-HTTP join command for a hub URL that is neither
on the tailnet nor loopback, says why, and does so only with --insecure (with a warning)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hub.onboarding.script import plain_http_risk


def enroll(tmp_path, url: str, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    env["HOMELAB_HUB_PUBLIC_URL"] = url
    return subprocess.run([sys.executable, "-m", "hub", "enroll", "n1", *extra, "--data-dir", str(tmp_path / "hub")],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("url", ["http://hub.example:8470", "http://192.168.1.10:8470", "http://10.0.0.2",
                                 "http://[2001:db8::1]:8470", "http://100.128.0.1:8470"])
def test_plain_http_off_the_tailnet_is_refused(tmp_path, url):
    r = enroll(tmp_path, url)
    assert r.returncode != 0
    assert "plain HTTP" in r.stderr and "--insecure" in r.stderr and "--tls" in r.stderr
    assert "hlj_" not in r.stdout + r.stderr  # no token was printed
    from hub.store import open_db

    db = open_db(tmp_path / "hub" / "homelab.db")
    try:
        assert db.execute("SELECT count(*) FROM join_tokens").fetchone()[0] == 0  # and none issued
    finally:
        db.close()
    ok = enroll(tmp_path, url, "--insecure")
    assert ok.returncode == 0 and "warning:" in ok.stderr and f"curl -sSL '{url}/bootstrap.sh?token=hlj_" in ok.stdout


@pytest.mark.parametrize("url", ["https://hub.example:8470", "http://127.0.0.1:8470", "http://localhost:8470",
                                 "http://100.101.102.103:8470", "http://hub.tail1234.ts.net:8470",
                                 "http://[fd7a:115c:a1e0::1]:8470", "http://[::1]:8470"])
def test_tailnet_loopback_and_https_need_no_flag(url):
    assert plain_http_risk(url) is None
