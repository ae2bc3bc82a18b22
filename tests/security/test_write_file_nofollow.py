"""Finding 3: the write-file playbook never follows a symbolic link on its path: not a linked
parent directory, not a linked file, not a planted FILE.homelab-bak link."""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from hub.paths import shipped

ME = pwd.getpwuid(os.geteuid()).pw_name


def run(mode: str, target: Path, content: bytes = b"approved content\n") -> subprocess.CompletedProcess:
    script = shipped("playbooks") / "write-file.sh"
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PLAYBOOK_PATH": str(script),
           "PARAM_PATH": str(target), "PARAM_USER": "", "PARAM_OWNER": ME, "PARAM_MODE": "0640",
           "PARAM_CONTENT": base64.b64encode(content).decode(), "PARAM_SHA256": hashlib.sha256(content).hexdigest()}
    return subprocess.run(["bash", str(script), mode], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def victim(tmp_path):
    v = tmp_path / "etc"
    v.mkdir()
    (v / "shadow").write_text("root:secret-hash\n")
    return v


def test_a_plain_path_is_written_with_mode_and_backup(tmp_path):
    target = tmp_path / "new" / "dir" / "app.conf"
    assert run("check", target).returncode == 0
    r = run("run", target)
    assert r.returncode == 0, r.stderr
    assert target.read_bytes() == b"approved content\n" and target.stat().st_mode & 0o777 == 0o640
    assert run("verify", target).returncode == 0
    assert run("run", target, b"second\n").returncode == 0
    assert target.read_bytes() == b"second\n"
    assert (target.parent / "app.conf.homelab-bak").read_bytes() == b"approved content\n"


@pytest.mark.parametrize("mode", ["run", "check", "verify"])
def test_a_symlinked_parent_directory_is_refused(tmp_path, victim, mode):
    user_dir = tmp_path / "home" / "alice"
    user_dir.mkdir(parents=True)
    (user_dir / ".config").symlink_to(victim)  # alice controls her home
    r = run(mode, user_dir / ".config" / "shadow")
    assert r.returncode != 0
    if mode != "verify":
        assert "is a symbolic link" in r.stderr, r.stderr
    assert (victim / "shadow").read_text() == "root:secret-hash\n"
    assert sorted(p.name for p in victim.iterdir()) == ["shadow"]


def test_a_symlink_higher_up_is_refused(tmp_path, victim):
    (tmp_path / "srv").symlink_to(tmp_path / "etc")
    r = run("run", tmp_path / "srv" / "shadow")
    assert r.returncode != 0 and "srv is a symbolic link" in r.stderr
    assert (victim / "shadow").read_text() == "root:secret-hash\n"


def test_a_symlinked_file_is_refused(tmp_path, victim):
    d = tmp_path / "app"
    d.mkdir()
    (d / "app.conf").symlink_to(victim / "shadow")
    r = run("run", d / "app.conf")
    assert r.returncode != 0 and "symbolic link or not a regular file" in r.stderr
    assert (victim / "shadow").read_text() == "root:secret-hash\n"


def test_a_planted_backup_link_is_replaced_not_followed(tmp_path, victim):
    d = tmp_path / "app"
    d.mkdir()
    (d / "app.conf").write_text("old\n")
    (d / "app.conf.homelab-bak").symlink_to(victim / "shadow")
    r = run("run", d / "app.conf")
    assert r.returncode == 0, r.stderr
    assert (victim / "shadow").read_text() == "root:secret-hash\n"
    bak = d / "app.conf.homelab-bak"
    assert not bak.is_symlink() and bak.read_text() == "old\n"
    assert (d / "app.conf").read_bytes() == b"approved content\n"
