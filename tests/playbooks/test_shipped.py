"""Each shipped playbook, run for real where this machine allows it, with its parameters
validated by the header and passed only as environment variables (as the node runs them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from agent import playbook as pbm
from tests.conftest import ROOT

DIR = ROOT / "playbooks"
BOOKS = pbm.load_dir(DIR)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run(name: str, mode: str = "run", params: dict | None = None, prefix: list[str] | None = None,
        path: str = PATH, timeout: float = 120) -> subprocess.CompletedProcess:
    pb = BOOKS[name]
    env = {"PATH": path, "LANG": "C.UTF-8", "HOME": "/root", "PLAYBOOK_PATH": pb.path,
           **pbm.env_of(pbm.validate_params(pb, params or {}))}
    argv = ["/bin/bash", pb.path] if mode == "run" else ["/bin/bash", "-c", getattr(pb, mode), name]
    return subprocess.run((prefix or []) + argv, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


@pytest.mark.parametrize("name", sorted(BOOKS))
def test_bash_n_and_shellcheck(name):
    from hub.playbooks.registry import lint

    assert lint(DIR / f"{name}.sh") == []
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (bash -n passed)")


def test_playbooks_check_command_on_the_shipped_set_and_a_broken_one(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hub", "playbooks", "check", str(DIR)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and f"{len(BOOKS)} playbook(s) ok" in r.stdout, r.stdout + r.stderr
    bad = tmp_path / "bad.sh"
    bad.write_text((DIR / "disk-report.sh").read_text().replace("name: disk-report", "name: bad")
                   .replace("risk: read-only", "risk: yolo") + "\nif then fi\n")
    r = subprocess.run([sys.executable, "-m", "hub", "playbooks", "check", str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert f"{bad}:5: risk:" in r.stdout and "bash -n" in r.stdout


@pytest.fixture
def tmpdir_tree(tmp_path):
    if not str(tmp_path).startswith("/tmp/"):
        pytest.skip("clean-tmp only accepts paths below /tmp")
    d = tmp_path / "t"
    (d / "sub").mkdir(parents=True)
    old = time.time() - 3 * 86400
    for f in (d / "old.log", d / "sub" / "old2.bin", d / "we ird $(id).txt"):
        f.write_text("x" * 100)
        os.utime(f, (old, old))
    (d / "new.txt").write_text("keep")
    return d


def test_clean_tmp_check_run_verify(tmpdir_tree):
    d = tmpdir_tree
    params = {"path": str(d), "age": "1d"}
    assert run("clean-tmp", "verify", params).returncode == 1  # old files still there
    chk = run("clean-tmp", "check", params)
    assert chk.returncode == 0 and "3 file(s)" in chk.stdout and "old2.bin" in chk.stdout
    assert len(list(d.rglob("*"))) == 5  # a dry run changes nothing
    r = run("clean-tmp", "run", params)
    assert r.returncode == 0 and "deleted 3 file(s)" in r.stdout, r.stderr
    assert sorted(p.name for p in d.rglob("*")) == ["new.txt", "sub"]
    assert run("clean-tmp", "verify", params).returncode == 0


def test_clean_tmp_refuses_to_follow_a_symlink_out_of_tmp(tmpdir_tree, tmp_path):
    # A sacrificial directory outside /tmp and /var/tmp (never the checkout: it may itself
    # live under /tmp, where cleaning it would be allowed and destructive).
    outside = Path(tempfile.mkdtemp(prefix="homelab-outside-", dir="/dev/shm"))
    try:
        for name in ("a", "b"):
            (outside / name).write_text("keep me")
            os.utime(outside / name, (1, 1))  # old enough to be cleaned if it were allowed
        link = tmpdir_tree / "escape"
        link.symlink_to(outside)
        r = run("clean-tmp", "run", {"path": str(link), "age": "60"})
        assert r.returncode == 4 and "outside /tmp and /var/tmp" in r.stderr
        assert sorted(p.name for p in outside.iterdir()) == ["a", "b"]
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_clean_tmp_header_refuses_other_paths():
    for bad in ("/etc", "/tmp/../etc", "/tmpfoo", "tmp"):
        with pytest.raises(ValueError):
            pbm.validate_params(BOOKS["clean-tmp"], {"path": bad})


def test_disk_report(tmp_path):
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "f").write_bytes(b"\0" * 200_000)
    r = run("disk-report", params={"path": str(tmp_path), "top": 5})
    assert r.returncode == 0, r.stderr
    assert "== filesystems" in r.stdout and "== largest directories" in r.stdout
    assert str(tmp_path / "big") in r.stdout


def test_unit_logs_says_what_it_can(tmp_path):
    r = run("unit-logs", params={"unit": "ssh", "lines": 5})
    assert r.returncode == 0, r.stderr
    assert "== " in r.stdout and ("ssh" in r.stdout.splitlines()[0] or "ssh" in r.stdout)


def test_restart_unit_without_systemd_exits_clearly():
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd runs here: restarting a real unit is not a test")
    r = run("restart-unit", params={"unit": "nginx"})
    assert r.returncode == 3 and "systemd is not running" in r.stderr


def test_journal_vacuum_check_or_clear_refusal():
    r = run("journal-vacuum", "check", {"size": "500M"})
    if r.returncode == 3:
        assert "journal" in r.stderr
    else:
        assert r.returncode == 0 and "--vacuum-size=500M" in r.stdout


def test_logrotate_force_check():
    r = run("logrotate-force", "check", {})
    if shutil.which("logrotate"):
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == 3 and "logrotate is not installed" in r.stderr


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="not a Debian-family machine")
def test_apt_upgrade_check_is_a_simulation():
    r = run("apt-upgrade", "check", {"kind": "upgrade"})
    assert r.returncode == 0, r.stderr
    v = run("apt-upgrade", "verify", {})
    assert "package(s) still pending" in v.stdout


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="not a Debian-family machine")
def test_apt_autoremove_check_is_a_simulation():
    r = run("apt-autoremove", "check", {})
    assert r.returncode == 0, r.stderr
    assert "package(s) still removable" in run("apt-autoremove", "verify", {}).stdout


def test_restart_container_without_an_engine():
    r = run("restart-container", "check", {"container": "web"}, path="/nonexistent:/bin:/usr/bin")
    if shutil.which("docker", path="/bin:/usr/bin") or shutil.which("podman", path="/bin:/usr/bin"):
        assert r.returncode != 0  # no container called web
    else:
        assert r.returncode == 3 and "neither docker nor podman" in r.stderr


# --- block-address, for real, inside network namespaces this test creates ---------------------


def sh(*argv, check=True):
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)


@pytest.fixture
def netns_pair():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"):
        pytest.skip("needs root, iproute2 and nftables")
    tag = uuid.uuid4().hex[:6]
    a, b = f"hlA{tag}", f"hlB{tag}"
    sh("ip", "netns", "add", a)
    sh("ip", "netns", "add", b)
    try:
        sh("ip", "link", "add", f"va{tag}", "netns", a, "type", "veth", "peer", "name", f"vb{tag}", "netns", b)
        sh("ip", "-n", a, "addr", "add", "10.77.0.1/24", "dev", f"va{tag}")
        sh("ip", "-n", b, "addr", "add", "10.77.0.2/24", "dev", f"vb{tag}")
        for ns, dev in ((a, f"va{tag}"), (b, f"vb{tag}")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield a, b
    finally:
        sh("ip", "netns", "del", a, check=False)
        sh("ip", "netns", "del", b, check=False)


LISTEN = "import socket,sys\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind((sys.argv[1], 7777)); s.listen(16)\nwhile True:\n    s.accept()[0].close()\n"
CONNECT = "import socket,sys\ntry:\n    socket.create_connection((sys.argv[1], 7777), timeout=1).close()\nexcept OSError:\n    sys.exit(1)\n"


@pytest.fixture
def listener(netns_pair):
    _a, b = netns_pair
    p = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c", LISTEN, "10.77.0.2"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not reachable(netns_pair[0], "10.77.0.2"):
        assert time.monotonic() < deadline, "test listener did not come up"
        time.sleep(0.1)
    yield
    p.kill()
    p.wait(10)


def reachable(src_ns: str, addr: str) -> bool:
    return sh("ip", "netns", "exec", src_ns, sys.executable, "-c", CONNECT, addr, check=False).returncode == 0


@pytest.mark.netns
def test_block_address_blocks_and_expires(netns_pair, listener):
    a, b = netns_pair
    inside = ["ip", "netns", "exec", b]
    assert reachable(a, "10.77.0.2")
    params = {"address": "10.77.0.1", "duration": "3s"}
    assert run("block-address", "verify", params, prefix=inside).returncode != 0
    r = run("block-address", "run", params, prefix=inside)
    assert r.returncode == 0 and "blocked 10.77.0.1/32 for 3s" in r.stdout, r.stderr
    assert run("block-address", "verify", params, prefix=inside).returncode == 0
    assert not reachable(a, "10.77.0.2")
    # the kernel lifts it by itself
    deadline = time.monotonic() + 10
    while run("block-address", "verify", params, prefix=inside).returncode == 0:
        assert time.monotonic() < deadline, "block did not expire"
        time.sleep(0.5)
    assert reachable(a, "10.77.0.2")


@pytest.mark.netns
def test_block_address_rollback_and_refusals(netns_pair):
    _a, b = netns_pair
    inside = ["ip", "netns", "exec", b]
    params = {"address": "10.77.0.1", "duration": "1h"}
    assert run("block-address", "run", params, prefix=inside).returncode == 0
    assert run("block-address", "rollback", params, prefix=inside).returncode == 0
    assert run("block-address", "verify", params, prefix=inside).returncode != 0
    for addr in ("127.0.0.1", "10.0.0.0/8", "::1"):
        r = run("block-address", "run", {"address": addr}, prefix=inside)
        assert r.returncode == 4 and "refusing" in r.stderr
    with pytest.raises(ValueError):
        pbm.validate_params(BOOKS["block-address"], {"address": "1.2.3.4; nft flush ruleset"})


def test_disk_report_survives_files_vanishing_while_it_looks(tmp_path):
    """find exits 1 when a file disappears mid-walk (a busy /tmp: another process's temporary
    files); under pipefail that ended disk-report with no 'largest reclaimable' line at all."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "find").write_text('#!/bin/sh\n/usr/bin/find "$@"\nexit 1\n')
    (shim / "find").chmod(0o755)
    r = run("disk-report", params={"path": str(tmp_path), "top": 3}, path=f"{shim}:{PATH}")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "\nlargest reclaimable: " in r.stdout, r.stdout
