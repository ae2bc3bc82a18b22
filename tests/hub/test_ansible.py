"""Configuration as code: export a node the hub learned about over the real wire, check the
playbook with a real ansible-playbook (--syntax-check, --check, and a real run of the file
tasks against this machine), then drift after the node changes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from selfdoc_helpers import FakeNode, created, modified, packages, service

from hub.ansible import history

ANSIBLE = Path(sys.executable).with_name("ansible-playbook")
pytestmark = pytest.mark.skipif(not ANSIBLE.exists(), reason="ansible-core is not installed (test extra)")


def hub_cli(data_dir: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "hub", *args, "--data-dir", str(data_dir)],
                       capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def run_playbook(export_dir: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ans-local"), "ANSIBLE_HOME": str(tmp_path / "ans"),
           "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ans-remote"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_RETRY_FILES_ENABLED": "0"}
    py = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable  # python3-apt lives there
    return subprocess.run(
        [str(ANSIBLE), "-i", "inventory.ini", "site.yml", "-e", "ansible_connection=local",
         "-e", "ansible_become=false", "-e", f"ansible_python_interpreter={py}", *args],
        cwd=export_dir, capture_output=True, text=True, timeout=300, env=env)


def test_apply_diff_round_trip_and_refusals():
    import difflib

    a = "one\ntwo\nthree\n"
    b = "zero\none\nthree\nfour\n"
    d = "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), "a", "b"))
    assert history.apply_diff(a, d) == b
    assert history.apply_diff("", "".join(difflib.unified_diff([], a.splitlines(True), "/dev/null", "b"))) == a
    assert history.apply_diff("something else\n", d) is None  # context does not match
    assert history.apply_diff(a, d[:-5] + "\n... diff truncated ...\n") is None


async def test_export_check_apply_and_drift(hub, tmp_path):
    target = tmp_path / "target"  # where the node's "config files" live (a real run writes here)
    conf, motd, secret, old = (str(target / p) for p in ("etc/app/app.conf", "etc/motd", "etc/app/token", "etc/old.conf"))
    node = await FakeNode(hub, "web1").join()
    await node.send(
        packages(("bash", "5.2", True), ("coreutils", "9.1", True), ("libc6", "2.36", False)),
        service("cron.service"), service("getty@tty1.service", active="inactive"),
        created(conf, "listen = 8080\n", mode=0o640, ts=10),
        modified(conf, "listen = 8080\n", "listen = 8080\nworkers = 4\n", ts=11, mode=0o640),
        created(motd, "", ts=12),
        created(secret, "s3cr3t\n", mode=0o600, secret=True, ts=13),
        modified(old, "was here before the agent\n", "changed\n", ts=14),  # no full history
    )
    out = tmp_path / "export"
    r = hub_cli(hub.data_dir, "ansible", "export", "web1", "-o", str(out))
    assert "2 packages, 2 services, 2 files; 2 files are manual steps" in r.stdout
    assert (out / "files" / conf.lstrip("/")).read_text() == "listen = 8080\nworkers = 4\n"
    hv = yaml.safe_load((out / "host_vars/web1.yml").read_text())
    assert hv["homelab_packages_apt"] == ["bash", "coreutils"]  # not the dependency
    assert [s["name"] for s in hv["homelab_services"]] == ["cron.service", "getty@tty1.service"]
    assert {f["dest"]: f["mode"] for f in hv["homelab_files"]} == {conf: "0640", motd: "0644"}
    readme = (out / "README.md").read_text()
    assert f"`{secret}`" in readme and "secret: its content never leaves the node" in readme
    assert f"`{old}`" in readme and "has not seen its full content" in readme
    assert not (out / "files" / secret.lstrip("/")).exists()

    syntax = run_playbook(out, tmp_path, "--syntax-check")
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    check = run_playbook(out, tmp_path, "--check")
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]
    assert "failed=0" in check.stdout and "Agent skipped: no join token" in check.stdout
    apt_task = check.stdout.split("TASK [Packages installed by hand (apt)]")[1].split("TASK [")[0]
    assert "ok: [web1]" in apt_task  # bash and coreutils are installed here: nothing to do
    assert not target.exists()  # --check changed nothing
    # a real run of everything after the package step recreates the files exactly
    real = run_playbook(out, tmp_path, "--start-at-task", "Directories of the watched files")
    assert real.returncode == 0, real.stdout[-4000:] + real.stderr[-2000:]
    assert Path(conf).read_text() == "listen = 8080\nworkers = 4\n"
    assert Path(conf).stat().st_mode & 0o777 == 0o640 and Path(motd).read_text() == ""

    now = hub_cli(hub.data_dir, "ansible", "drift", "web1")
    assert "web1: no drift since the export of" in now.stdout
    old = hub_cli(hub.data_dir, "drift", "web1")  # the spelling before `ansible drift`
    assert old.stdout == now.stdout
    assert old.stderr == "warning: `homelab-hub drift` is deprecated; use `homelab-hub ansible drift`\n"
    await node.send(
        packages(("bash", "5.3", True), ("tmux", "3.3a", True), ("libc6", "2.36", False), ts=20),
        service("cron.service", enabled="disabled", ts=21),
        modified(conf, "listen = 8080\nworkers = 4\n", "listen = 9090\nworkers = 4\n", ts=22, mode=0o600),
    )
    r = hub_cli(hub.data_dir, "ansible", "drift", "web1", "--exit-code", ok=False)
    assert r.returncode == 1, r.stderr
    text = r.stdout
    for needle in ("packages (dpkg):", "  ~ bash 5.2 -> 5.3", "  - coreutils 9.1", "  + tmux 3.3a",
                   "  - cron.service (no longer enabled)", f"  ~ {conf}: mode 0640 -> 0600",
                   f"  ~ {conf}: content changed", "      -listen = 8080", "      +listen = 9090"):
        assert needle in text, (needle, text)
    assert "libc6" not in text
    by_dir = hub_cli(hub.data_dir, "ansible", "drift", "web1", "--baseline", str(out)).stdout
    assert "  + tmux 3.3a" in by_dir
    bad = hub_cli(hub.data_dir, "ansible", "drift", "web1", "--baseline", str(tmp_path), ok=False)
    assert bad.returncode != 0 and "no such export manifest" in bad.stderr
    other = hub_cli(hub.data_dir, "ansible", "drift", "nobody", "--baseline", str(out), ok=False)
    assert other.returncode != 0 and "an export of 'web1', not of 'nobody'" in other.stderr
    never = hub_cli(hub.data_dir, "ansible", "drift", "nobody", ok=False)
    assert never.returncode != 0 and "no node 'nobody'" in never.stderr
    typo = hub_cli(hub.data_dir, "ansible", "drift", "web", ok=False)
    assert typo.returncode != 0 and "no node 'web'; did you mean web1?" in typo.stderr
    shutil.rmtree(target)


async def test_hostile_names_from_a_node_never_reach_ansible_or_escape_the_export(hub, tmp_path):
    node = await FakeNode(hub, "evil").join()
    jinja = "/etc/{{ lookup('pipe', 'touch " + str(tmp_path / "pwned") + "') }}"
    await node.send(
        packages(("bash", "5.2", True), ("{{ lookup('pipe','id') }}", "1", True)),
        service("{{ lookup('pipe','id') }}.service"),
        created(jinja, "x\n", ts=10),
        created("/../../../escaped", "x\n", ts=11),
    )
    out = tmp_path / "deep" / "export"
    hub_cli(hub.data_dir, "ansible", "export", "evil", "-o", str(out))
    hv = (out / "host_vars/evil.yml").read_text()
    assert "lookup" not in hv and "escaped" not in hv
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "deep" / "escaped").exists()
    readme = (out / "README.md").read_text()
    assert readme.count("left out") == 4
    check = run_playbook(out, tmp_path, "--check")
    assert check.returncode == 0, check.stdout[-3000:]
    assert not (tmp_path / "pwned").exists()


async def test_a_file_changed_long_ago_is_still_exported_after_its_history_expires(hub):
    """Retention deletes file history older than event_retention; each file's content at that
    horizon is kept as its starting point first, so the export still rebuilds it."""
    from hub.rollup import expire_history

    conf, other = "/etc/app/app.conf", "/etc/app/other.conf"
    node = await FakeNode(hub, "old1").join()
    old, recent = time.time() - 200 * 86400, time.time() - 60
    await node.send(
        created(conf, "a = 1\n", ts=old),
        modified(conf, "a = 1\n", "a = 1\nb = 2\n", ts=old + 1),
        created(other, "x\n", ts=old + 2),
        modified(other, "x\n", "x\ny\n", ts=recent),  # half of its history is old
    )

    def contents(db):
        rows = db.execute("SELECT path, sha256 FROM files WHERE node = 'old1'").fetchall()
        return {p: history.file_content(db, "old1", p, sha) for p, sha in rows}

    before = await hub.writer.run(contents)
    assert before == {conf: "a = 1\nb = 2\n", other: "x\ny\n"}
    assert await hub.writer.run(lambda db: expire_history(db, time.time() - 90 * 86400)) is False
    assert hub.query("SELECT path FROM file_changes WHERE node = 'old1'") == [(other,)]
    assert await hub.writer.run(contents) == before
    # a second pass has nothing left to fold and changes nothing
    assert await hub.writer.run(lambda db: history.fold_history(db, time.time() - 90 * 86400)) == 0
    assert await hub.writer.run(contents) == before
