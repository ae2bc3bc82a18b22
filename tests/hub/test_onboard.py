"""Onboarding: the printed one-liner, the served script, refusals, and for real a second
"machine" in a network namespace that installs the agent from the hub over a veth link."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from selfdoc_helpers import Proc, free_port, query, wait_for

from hub.errors import HubError
from hub.onboarding import script as bootstrap_script


@pytest.fixture(scope="session")
def bootstrap_cache(tmp_path_factory) -> Path:
    """One build of the agent wheel + wheelhouse per test session (pip takes seconds)."""
    return tmp_path_factory.mktemp("bootstrap-cache")


def hub_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    return {**env, **extra}


def test_enroll_prints_one_command_and_keeps_the_join_line(tmp_path):
    # plain HTTP off the tailnet: only with --insecure (tests/security/test_enroll_transport.py)
    r = subprocess.run([sys.executable, "-m", "hub", "enroll", "laptop", "--insecure", "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60,
                       env=hub_env(HOMELAB_HUB_PUBLIC_URL="http://hub.example:8470"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    token = lines[-1].split()[-1]
    assert lines[-1] == f"homelab-agent join http://hub.example:8470 {token}"
    assert lines[0] == f"curl -sSL 'http://hub.example:8470/bootstrap.sh?token={token}' | sh"


async def test_refusals_are_scripts_that_fail_and_files_need_a_token(hub):
    async with aiohttp.ClientSession() as s:
        for q, needle in (("", "malformed join token"), ("?token=hlj_nope", "unknown join token")):
            async with s.get(f"{hub.url}/bootstrap.sh{q}") as r:
                assert r.status == 401
                body = await r.text()
            run = subprocess.run(["sh"], input=body, capture_output=True, text=True, timeout=10)
            assert run.returncode == 1 and needle in run.stderr
        expired = hub.enroll("old", ttl=-1)
        async with s.get(f"{hub.url}/bootstrap.sh?token={expired}") as r:
            assert r.status == 401 and "expired" in await r.text()
        for path in ("/agent.whl", "/bootstrap/index.json", "/bootstrap/files/pip.whl"):
            async with s.get(f"{hub.url}{path}") as r:
                assert r.status == 401, path
        async with s.get(f"{hub.url}/bootstrap/files/..%2F..%2Fhomelab.db?token={expired}") as r:
            assert r.status in (401, 404)


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed")
def test_rendered_script_passes_shellcheck(tmp_path):
    index = {"version": "0.1.0", "python": "3.11", "agent_wheel": "sentient_homelab-0.1.0-py3-none-any.whl"}
    script = bootstrap_script.render_script("http://10.0.0.1:8470", "hlj_abc-DEF_123", "n1", index)
    assert "'hlj_abc-DEF_123'" in script and "@" + "UNIT_JSON@" not in script
    (tmp_path / "b.sh").write_text(script)
    r = subprocess.run(["shellcheck", "-s", "sh", str(tmp_path / "b.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    with pytest.raises(ValueError, match="quote"):
        bootstrap_script.render_script("http://x'; rm -rf /;'", "hlj_a", "n1", index)


def test_unit_without_prefix_is_the_shipped_one():
    from hub import paths

    shipped = paths.shipped("systemd") / "homelab-agent.service"
    if not shipped.exists():
        pytest.skip("systemd/homelab-agent.service not shipped")
    template = bootstrap_script.agent_unit()
    unit = template.replace("@APP@", "/opt/homelab-agent").replace("@STATE@", "/var/lib/homelab-agent")
    assert unit == shipped.read_text()
    # every program the unit runs is the node's venv's, wherever --prefix puts it
    assert "/opt/homelab-agent" not in template


# -- the real thing: a fresh machine in a network namespace -----------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def node_netns():
    """A namespace linked to the host by a veth pair; addresses from a random 10.x/30."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2")
    tag = secrets.token_hex(3)
    ns, host_if, node_if = f"hlob-{tag}", f"hlo{tag}a", f"hlo{tag}b"
    a, b = 100 + secrets.randbelow(150), secrets.randbelow(64) * 4
    host_ip, node_ip = f"10.{a}.{b}.1", f"10.{a}.{b}.2"
    try:
        _ip("netns", "add", ns)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot create a network namespace: {e.stderr}")
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", node_if)
        _ip("link", "set", node_if, "netns", ns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{node_ip}/30", "dev", node_if)
        _ip("netns", "exec", ns, "ip", "link", "set", node_if, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_ip, node_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _netns_of(pid: int) -> str:
    r = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


@pytest.mark.slow
@pytest.mark.netns
def test_fresh_node_in_a_namespace_installs_from_the_hub_and_reports(node_netns, tmp_path, bootstrap_cache):
    ns, host_ip, node_ip = node_netns
    port = free_port()
    data_dir = tmp_path / "hub"
    env = hub_env(HOMELAB_HUB_DATA_DIR=str(data_dir), HOMELAB_HUB_LISTEN=f"{host_ip}:{port}",
                  HOMELAB_HUB_BOOTSTRAP_DIR=str(bootstrap_cache))
    hub = Proc([sys.executable, "-m", "hub", "serve"], tmp_path / "hub.log", env)
    prefix = tmp_path / "node-root"
    pidfile = prefix / "var/lib/homelab-agent/agent.pid"
    try:
        wait_for(lambda: hub.alive() and "hub: http" in hub.output(), 30, what="hub to listen")
        r = subprocess.run([sys.executable, "-m", "hub", "enroll", "newbox", "--insecure"], capture_output=True,
                           text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        one_liner = r.stdout.splitlines()[0]
        assert one_liner.startswith(f"curl -sSL 'http://{host_ip}:{port}/bootstrap.sh?token=hlj_")
        # the node has no route anywhere but the veth link; python3 is the distribution's
        node_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                    "HOMELAB_PYTHON": "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable}
        cmd = ["ip", "netns", "exec", ns, "sh", "-c", f"{one_liner} -s -- --prefix {prefix}"]
        first = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=node_env)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "agent started in the background" in first.stderr
        pid = int(pidfile.read_text())
        assert _netns_of(pid) == ns  # the agent really lives on the other "machine"
        assert (prefix / "etc/systemd/system/homelab-agent.service").read_text().count(
            f"ExecStart={prefix}/opt/homelab-agent/bin/homelab-agent run\n") == 1
        assert (prefix / "var/lib/homelab-agent/credential").stat().st_mode & 0o777 == 0o600
        assert (prefix / "opt/homelab-agent/share/homelab/playbooks/restart-unit.sh").exists()  # from the wheel

        def seen():
            rows = query(data_dir, "SELECT last_seq, address FROM nodes WHERE name = 'newbox'")
            return rows and rows[0][0] > 0 and rows[0]

        last_seq, address = wait_for(seen, 60, what="the hub to store events from the new node")
        assert address == node_ip
        assert query(data_dir, "SELECT count(*) FROM events WHERE node = 'newbox'")[0][0] > 0

        # running the same command again changes nothing and breaks nothing
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=node_env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "already joined" in again.stderr and "already running" in again.stderr
        assert int(pidfile.read_text()) == pid
        assert query(data_dir, "SELECT count(*) FROM join_tokens WHERE node = 'newbox' AND used IS NOT NULL")[0][0] == 1
        before = query(data_dir, "SELECT last_seq FROM nodes WHERE name = 'newbox'")[0][0]
        wait_for(lambda: query(data_dir, "SELECT last_seq FROM nodes WHERE name = 'newbox'")[0][0] > before,
                 60, interval=0.5, what="the agent to keep reporting after the re-run")
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and _netns_of(int(pidfile.read_text())):
                    time.sleep(0.2)
            except (ProcessLookupError, ValueError):
                pass
        hub.terminate()


@pytest.mark.slow
def test_tls_hub_one_liner_pins_the_certificate(tmp_path, bootstrap_cache):
    """With the hub's own certificate, curl, the downloads and the join all pin it."""
    if not shutil.which("curl"):
        pytest.skip("needs curl")
    port = free_port()
    data_dir = tmp_path / "hub"
    env = hub_env(HOMELAB_HUB_DATA_DIR=str(data_dir), HOMELAB_HUB_LISTEN=f"127.0.0.1:{port}",
                  HOMELAB_HUB_BOOTSTRAP_DIR=str(bootstrap_cache), HOMELAB_HUB_TLS="1")
    hub = Proc([sys.executable, "-m", "hub", "serve"], tmp_path / "hub.log", env)
    prefix = tmp_path / "node-root"
    pidfile = prefix / "var/lib/homelab-agent/agent.pid"
    try:
        wait_for(lambda: hub.alive() and "hub: https" in hub.output(), 30, what="TLS hub to listen")
        r = subprocess.run([sys.executable, "-m", "hub", "enroll", "tlsbox"], capture_output=True,
                           text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        one_liner = r.stdout.splitlines()[0]
        assert one_liner.startswith("curl -sSL -k --pinnedpubkey 'sha256//")
        pin = one_liner.split("sha256//")[1].split("'")[0]
        wrong = one_liner.replace(pin, base64.b64encode(bytes(32)).decode()).replace(" | sh", " -o /dev/null")
        refused = subprocess.run(["sh", "-c", wrong], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 90, refused.stderr  # CURLE_SSL_PINNEDPUBKEYNOTMATCH
        assert subprocess.run(["sh", "-c", one_liner.replace(" | sh", " -o /dev/null")],
                              capture_output=True, timeout=60).returncode == 0
        run = subprocess.run(["sh", "-c", f"{one_liner} -s -- --prefix {prefix}"], capture_output=True, text=True,
                             timeout=900, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
        assert run.returncode == 0, run.stderr[-3000:]
        assert (prefix / "var/lib/homelab-agent/hub.crt").exists()  # pinned for shipping too
        wait_for(lambda: (query(data_dir, "SELECT last_seq FROM nodes WHERE name = 'tlsbox'") or [(0,)])[0][0] > 0,
                 60, what="events from the TLS-bootstrapped node")
    finally:
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
        hub.terminate()


def test_offline_hub_builds_from_its_wheelhouse_only(tmp_path, bootstrap_cache, monkeypatch):
    from hub import paths
    from hub.onboarding.bundle import Artifacts

    online = Artifacts(bootstrap_cache)
    idx = online.ensure()  # built once per session (with the index and pip's cache)
    offline_dir = tmp_path / "wheels"
    offline_dir.mkdir()
    for name in idx["files"]:
        shutil.copy2(online.path_of(name), offline_dir / name)
    off = Artifacts(tmp_path / "boot", find_links=offline_dir)
    idx2 = off.ensure()  # pip runs with --no-index: only offline_dir can satisfy it
    assert idx2["files"] == idx["files"]  # the same wheels, byte for byte
    # a hub installed from wheels (the systemd install) has no source tree: the prebuilt
    # wheel is used, not refused for want of a pyproject.toml (found by the node lab)
    with monkeypatch.context() as m:
        m.setattr(paths, "REPO", tmp_path / "site-packages")
        assert Artifacts(tmp_path / "boot-installed", find_links=offline_dir).ensure()["files"] == idx["files"]
    (offline_dir / idx["agent_wheel"]).unlink()
    for p in offline_dir.glob("msgspec-*.whl"):
        p.unlink()
    broken = Artifacts(tmp_path / "boot2", find_links=offline_dir)
    with pytest.raises(HubError, match="failed"):
        broken.ensure()
    assert not broken.ready()


def test_bootstrap_digest_covers_the_agent_package(tmp_path, monkeypatch):
    # a changed agent must never be served from a stale wheel (the digest once hashed a
    # directory that no longer existed after hub/ was split into capability packages)
    import agent
    from hub.onboarding.bundle import source_digest

    pkg = tmp_path / "agent"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("x = 1\n")
    monkeypatch.setattr(agent, "__file__", str(pkg / "__init__.py"))
    before = source_digest()
    (pkg / "__init__.py").write_text("x = 2\n")
    assert source_digest() != before
