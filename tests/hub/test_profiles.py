"""Node profiles: validation with file/line/key errors, assignment applied as proposals when
the node first reports (nothing runs), and the two playbooks they use, run for real."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys

import pytest
from selfdoc_helpers import FakeNode, async_wait_for, query, service

from hub import paths
from hub.profiles import spec as profiles

PROFILE = """\
name: workstation
description: My usual desktop.
packages: [tmux, git, htop, git]
files:
  - path: /etc/motd
    content: "hello lab\\n"
dotfiles:
  - user: alice
    path: .bashrc
    source: dotfiles/bashrc
    mode: "0600"
"""


def write_profile(d, text=PROFILE, name="workstation"):
    (d / "dotfiles").mkdir(parents=True, exist_ok=True)
    (d / "dotfiles" / "bashrc").write_text("alias ll='ls -l'\n")
    (d / f"{name}.yaml").write_text(text)
    return d / f"{name}.yaml"


def test_profile_loads_and_normalises(tmp_path):
    p = profiles.load(write_profile(tmp_path))
    assert p.packages == ("git", "htop", "tmux")
    motd, bashrc = p.files
    assert (motd.path, motd.owner, motd.mode, motd.content) == ("/etc/motd", "root", "0644", b"hello lab\n")
    assert (bashrc.path, bashrc.user, bashrc.owner, bashrc.mode) == ("/.bashrc", "alice", "alice", "0600")
    params = bashrc.params()
    assert base64.b64decode(params["content"]) == b"alias ll='ls -l'\n"
    assert params["sha256"] == hashlib.sha256(b"alias ll='ls -l'\n").hexdigest()


@pytest.mark.parametrize("text, needle", [
    ("name: w\nfrobs: 1\n", ":2: frobs: unknown key"),
    ("name: w\npackages: [git, 'rm -rf']\n", ":2: packages[1]: 'rm -rf' is not a package name"),
    ("name: w\ndotfiles:\n  - path: .x\n    content: a\n", ":2: dotfiles[0].user: a dotfile needs the user"),
    ("name: w\nfiles:\n  - path: /etc/x\n    source: ../../etc/shadow\n", ":2: files[0].source: must stay inside"),
    ("name: w\nfiles:\n  - path: /etc/../x\n    content: a\n", ":2: files[0].path:"),
    ("name: w\nfiles:\n  - path: /etc/x\n    content: a\n    mode: 999\n", "files[0].mode: '999' is not an octal mode"),
    ("name: w\nfiles:\n  - path: /etc/x\n    content: '" + "a" * 4000 + "'\n", "at most 3072"),
    ("name: w\nfiles: [\n", "invalid YAML"),
])
def test_bad_profiles_name_file_line_and_key(tmp_path, text, needle):
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(profiles.ProfileError) as e:
        profiles.load(path)
    assert str(path) in str(e.value) and needle in str(e.value)


async def test_assigned_profile_becomes_proposals_when_the_node_reports(hub):
    write_profile(hub.data_dir / "profiles")
    token = hub.enroll("newbox")
    assert token
    r = subprocess.run([sys.executable, "-m", "hub", "profiles", "assign", "newbox", "workstation",
                        "--data-dir", str(hub.data_dir)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    bad = subprocess.run([sys.executable, "-m", "hub", "profile", "assign", "newbox", "nope",
                          "--data-dir", str(hub.data_dir)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "no profile 'nope'" in bad.stderr
    assert "warning: `homelab-hub profile` is deprecated; use `homelab-hub profiles`\n" in bad.stderr
    assert query(hub.data_dir, "SELECT count(*) FROM proposals")[0][0] == 0  # not before it reports

    node = FakeNode(hub, "newbox")
    node.seq = 0
    await node.join()
    await node.send(service("ssh.service"))

    def proposed():
        return query(hub.data_dir, "SELECT playbook, state, params, why, chosen_by FROM proposals"
                                   " WHERE node = 'newbox' ORDER BY id")

    rows = await async_wait_for(lambda: len(proposed()) == 3 and proposed(), 20, what="profile proposals")
    assert [r[0] for r in rows] == ["install-packages", "write-file", "write-file"]
    assert {r[1] for r in rows} == {"proposed"} and {r[4] for r in rows} == {"profile"}
    assert '"packages":"git htop tmux"' in rows[0][2].replace(" :", ":").replace(": ", ":")
    assert "~alice/.bashrc" in rows[2][3]
    applied = query(hub.data_dir, "SELECT applied, proposals, error FROM node_profiles WHERE node = 'newbox'")
    assert applied[0][0] is not None and applied[0][2] is None
    assert query(hub.data_dir, "SELECT count(*) FROM jobs")[0][0] == 0  # nothing runs without approval
    await node.send(service("ssh.service", ts=2000))  # applied once, not on every report
    await node.send(service("cron.service", ts=2001))
    assert len(proposed()) == 3


def _run_playbook(name: str, mode: str, env: dict) -> subprocess.CompletedProcess:
    script = paths.shipped("playbooks") / f"{name}.sh"
    return subprocess.run(["bash", str(script), mode], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PLAYBOOK_PATH": str(script), **env})


@pytest.mark.skipif(os.geteuid() != 0, reason="write-file sets the owner: needs root")
def test_write_file_playbook_for_real(tmp_path):
    target = tmp_path / "etc" / "motd"
    content = b"hello lab\n"
    env = {"PARAM_PATH": str(target), "PARAM_USER": "", "PARAM_OWNER": "root", "PARAM_MODE": "0640",
           "PARAM_CONTENT": base64.b64encode(content).decode(), "PARAM_SHA256": hashlib.sha256(content).hexdigest()}
    assert "would write" in _run_playbook("write-file", "check", env).stdout
    assert not target.exists()
    assert _run_playbook("write-file", "verify", env).returncode != 0
    run = _run_playbook("write-file", "run", env)
    assert run.returncode == 0, run.stderr
    assert target.read_bytes() == content and target.stat().st_mode & 0o777 == 0o640
    assert _run_playbook("write-file", "verify", env).returncode == 0
    target.write_text("local edit\n")
    assert _run_playbook("write-file", "run", env).returncode == 0
    assert (tmp_path / "etc" / "motd.homelab-bak").read_text() == "local edit\n"  # kept, not lost
    tampered = _run_playbook("write-file", "run", {**env, "PARAM_SHA256": "0" * 64})
    assert tampered.returncode == 2 and "does not match its sha256" in tampered.stderr


@pytest.mark.skipif(not os.path.exists("/usr/bin/dpkg-query"), reason="needs dpkg")
def test_install_packages_playbook_check_and_verify():
    ok = _run_playbook("install-packages", "check", {"PARAM_PACKAGES": "bash coreutils"})
    assert ok.returncode == 0 and "would install: nothing" in ok.stdout
    assert _run_playbook("install-packages", "verify", {"PARAM_PACKAGES": "bash coreutils"}).returncode == 0
    missing = _run_playbook("install-packages", "check", {"PARAM_PACKAGES": "bash homelab-no-such-pkg"})
    assert "would install: homelab-no-such-pkg" in missing.stdout
    assert _run_playbook("install-packages", "verify", {"PARAM_PACKAGES": "bash homelab-no-such-pkg"}).returncode != 0
