"""A hub with its own TLS certificate on a LAN: enroll prints the pin, join checks it before
the token leaves the node, the agent then ships over TLS trusting only that certificate."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from fleetlib import wait_for

from hub import tls


def hub_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub", *args], capture_output=True, text=True, timeout=60, env=env)


def agent_join(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "join", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def join_line(stdout: str) -> list[str]:
    """The `homelab-agent join ...` line of enroll's output (other lines may precede it)."""
    return next(ln.split() for ln in stdout.splitlines() if ln.startswith("homelab-agent join "))


def poke(d) -> bool:
    n = len(list(d.iterdir()))
    (d / f"f{n}.conf").write_text(f"change {n}\n")
    return True


@pytest.fixture
def tls_env(tmp_path, monkeypatch):
    for k in ("HOMELAB_HUB_PUBLIC_URL", "HOMELAB_HUB_CONFIG", "HOMELAB_AGENT_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOMELAB_HUB_TLS", "1")


def test_cert_is_created_once_and_fingerprint_is_stable(tmp_path):
    fp = tls.fingerprint(tmp_path)
    assert re.fullmatch(r"SHA256:[0-9a-f]{64}", fp)
    assert (tmp_path / tls.KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert tls.fingerprint(tmp_path) == fp  # not re-created
    tls.server_context(tmp_path)  # loads
    assert re.fullmatch(r"sha256//[A-Za-z0-9+/]{43}=", tls.curl_pin(tmp_path))


def test_curl_accepts_the_pin_and_refuses_another(tmp_path, tls_env, hub_process):
    import os
    import shutil

    if not shutil.which("curl"):
        pytest.skip("no curl")
    h = hub_process()
    os.environ["HOMELAB_HUB_LISTEN"] = f"127.0.0.1:{h.port}"
    try:
        h.start()
        url = f"https://127.0.0.1:{h.port}/healthz"
        ok = subprocess.run(["curl", "-sk", "--pinnedpubkey", tls.curl_pin(h.data_dir), url],
                            capture_output=True, text=True, timeout=20)
        assert ok.returncode == 0 and '"ok": true' in ok.stdout
        other = tls.curl_pin(tmp_path / "other")
        bad = subprocess.run(["curl", "-sk", "--pinnedpubkey", other, url], capture_output=True, text=True, timeout=20)
        assert bad.returncode == 90  # CURLE_SSL_PINNEDPUBKEYNOTMATCH
    finally:
        os.environ.pop("HOMELAB_HUB_LISTEN", None)


def test_tls_enroll_join_pin_and_ship(tmp_path, tls_env, hub_process, agent_process):
    import os

    h = hub_process()
    os.environ["HOMELAB_HUB_LISTEN"] = f"127.0.0.1:{h.port}"
    try:
        h.start()
        env = dict(os.environ)
        r = hub_cli("enroll", "lan1", "--data-dir", str(h.data_dir), env=env)
        assert r.returncode == 0, r.stderr
        cmd = join_line(r.stdout)
        assert cmd[:2] == ["homelab-agent", "join"] and cmd[2] == f"https://127.0.0.1:{h.port}"
        assert cmd[4] == "--fingerprint" and cmd[5] == tls.fingerprint(h.data_dir)
        url, token, fp = cmd[2], cmd[3], cmd[5]

        # a wrong pin: refused before the token is sent, so the token still works afterwards
        bad = "SHA256:" + "0" * 64
        r = agent_join(url, token, "--fingerprint", bad, "--state-dir", str(tmp_path / "bad"), env=env)
        assert r.returncode != 0 and "refusing to send the token" in r.stderr
        assert not (tmp_path / "bad" / "credential").exists()
        assert h.query("SELECT used FROM join_tokens")[0][0] is None

        state = tmp_path / "agent"
        r = agent_join(url, token, "--fingerprint", fp, "--state-dir", str(state), env=env)
        assert r.returncode == 0, r.stderr
        assert (state / "hub.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")

        watched = tmp_path / "watched"
        watched.mkdir()
        a = agent_process(state, "--collectors", "files", "--watch", str(watched))
        # the watch starts a moment after the process: keep touching until one arrives
        wait_for(lambda: poke(watched) and h.query("SELECT count(*) FROM file_changes")[0][0] >= 1,
                 30, interval=0.5, what="a file change shipped over TLS")
        assert "CERTIFICATE_VERIFY_FAILED" not in a.output()
    finally:
        os.environ.pop("HOMELAB_HUB_LISTEN", None)


def test_agent_refuses_a_hub_with_another_certificate(tmp_path, tls_env, hub_process, agent_process):
    """The pinned certificate is the only trust anchor: a hub (or impostor) presenting another
    certificate gets nothing, and the events wait in the spool."""
    import os

    h = hub_process()
    os.environ["HOMELAB_HUB_LISTEN"] = f"127.0.0.1:{h.port}"
    try:
        h.start()
        env = dict(os.environ)
        cmd = join_line(hub_cli("enroll", "lan2", "--data-dir", str(h.data_dir), env=env).stdout)
        state = tmp_path / "agent"
        assert agent_join(cmd[2], cmd[3], "--fingerprint", cmd[5], "--state-dir", str(state), env=env).returncode == 0
        h.stop()
        # the impostor: same address and data, a new certificate
        for f in (tls.CERT_FILE, tls.KEY_FILE):
            (h.data_dir / f).unlink()
        h.start()
        assert tls.fingerprint(h.data_dir) != cmd[5]
        watched = tmp_path / "watched"
        watched.mkdir()
        a = agent_process(state, "--collectors", "files", "--watch", str(watched))
        wait_for(lambda: poke(watched) and "CERTIFICATE_VERIFY_FAILED" in a.output(),
                 30, what="the agent refusing the unknown certificate")
        assert h.query("SELECT count(*) FROM file_changes")[0][0] == 0
        assert len(list(watched.iterdir())) >= 1
    finally:
        os.environ.pop("HOMELAB_HUB_LISTEN", None)
