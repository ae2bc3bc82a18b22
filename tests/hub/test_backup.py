"""Backup and restore: archive contents and checks, refusal on a running hub, and the real
thing — a restore in the middle of a stream of events from an agent subprocess."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import aiohttp
import pytest
from selfdoc_helpers import free_port, join_agent, query, wait_for

from agent import wire
from hub.backup import archive as backup
from hub.errors import Conflict


def hub_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "hub", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


async def _join(hub, name="n1") -> str:
    token = hub.enroll(name)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{hub.url}/v1/join", json={"token": token}) as r:
            return (await r.json())["credential"]


async def _send(hub, cred: str, node: str, first: int, n: int) -> dict:
    events = [(first + i, wire.encode_event(wire.Notice(ts=time.time(), source="t", level="info", message=f"m{first + i}")))
              for i in range(n)]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {cred}"}) as s:
        async with s.post(f"{hub.url}/v1/ingest", data=wire.encode_batch(node, time.time(), events)) as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def test_backup_while_ingesting_then_restore(hub, tmp_path):
    cred = await _join(hub)
    await _send(hub, cred, "n1", 1, 100)
    (hub.data_dir / "hub.toml").write_text('token_ttl = "2h"\n')
    (hub.data_dir / "hub_tls.crt").write_text("CERT")
    (hub.data_dir / "hub_tls.key").write_text("KEY")
    (hub.data_dir / "profiles" / "dotfiles").mkdir(parents=True)
    (hub.data_dir / "profiles" / "dotfiles" / "bashrc").write_text("alias ll='ls -l'\n")
    out = tmp_path / "b.tar.gz"
    # the hub keeps ingesting while the snapshot is taken
    loop = asyncio.get_running_loop()
    snap = loop.run_in_executor(None, backup.create, hub.data_dir, out, None)
    await _send(hub, cred, "n1", 101, 100)
    info = await snap
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert info.nodes["n1"] in (100, 200)
    names = {f["name"] for f in info.files}
    assert {"homelab.db", "hub.toml", "hub_signing.key", "hub_tls.crt", "hub_tls.key",
            "profiles/dotfiles/bashrc"} <= names
    assert not any(n.startswith(("bootstrap/", "docs/")) or n == "hub.lock" for n in names)
    with tarfile.open(out) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert manifest["nodes"] == info.nodes

    target = tmp_path / "restored"
    m = backup.restore(out, target)
    assert m["moved_aside"] is None
    seqs = [r[0] for r in query(target, "SELECT seq FROM events WHERE node = 'n1' ORDER BY seq")]
    assert seqs == list(range(1, info.nodes["n1"] + 1))  # consistent: no torn batch
    assert (target / "hub_signing.key").read_bytes() == (hub.data_dir / "hub_signing.key").read_bytes()
    assert (target / "hub_signing.key").stat().st_mode & 0o777 == 0o600
    assert (target / "hub.toml").read_text() == 'token_ttl = "2h"\n'
    assert (target / "profiles/dotfiles/bashrc").read_text() == "alias ll='ls -l'\n"


async def test_restore_refuses_running_hub_and_keeps_what_it_replaces(hub, tmp_path):
    cred = await _join(hub)
    await _send(hub, cred, "n1", 1, 5)
    out = tmp_path / "b.tar.gz"
    backup.create(hub.data_dir, out)
    with pytest.raises(Conflict, match="stop the hub first"):
        backup.restore(out, hub.data_dir)
    assert backup.hub_running(hub.data_dir)
    other = tmp_path / "other"
    backup.restore(out, other)
    (other / "hub.toml").write_text("# mine\n")
    m = backup.restore(out, other)  # not running: allowed, and the old files are kept
    aside = Path(m["moved_aside"])
    assert (aside / "homelab.db").exists() and (aside / "hub.toml").read_text() == "# mine\n"
    assert not (other / "hub.toml").exists()  # the backup had no hub.toml


def _rewrite(src: Path, dst: Path, edit) -> None:
    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()
            m2, data = edit(m, data)
            if m2 is not None:
                m2.size = len(data)
                tout.addfile(m2, io.BytesIO(data))


async def test_damaged_or_hostile_archives_are_refused(hub, tmp_path):
    cred = await _join(hub)
    await _send(hub, cred, "n1", 1, 3)
    good = tmp_path / "good.tar.gz"
    backup.create(hub.data_dir, good)
    target = tmp_path / "t"
    target.mkdir()
    (target / "keep").write_text("x")

    def flip(m, data):
        if m.name == "hub_signing.key":
            data = data[:-2] + b"X\n"
        return m, data

    def traversal(m, data):
        if m.name == "manifest.json":
            man = json.loads(data)
            man["files"][0]["name"] = "../../evil"
            data = json.dumps(man).encode()
        return m, data

    def drop_db(m, data):
        return (None, data) if m.name == "homelab.db" else (m, data)

    for edit, needle in ((flip, "hub_signing.key: checksum mismatch"),
                         (traversal, "unsafe or missing name"),
                         (drop_db, "homelab.db: listed in the manifest but missing")):
        bad = tmp_path / f"{edit.__name__}.tar.gz"
        _rewrite(good, bad, edit)
        with pytest.raises(backup.BackupError, match=needle):
            backup.restore(bad, target)
        assert sorted(p.name for p in target.iterdir()) == ["keep"]  # nothing touched
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(backup.BackupError, match="cannot read"):
        backup.restore(tmp_path / "junk.tar.gz", target)


def _file_events(data_dir: Path, action: str | None = None) -> list[tuple[int, str, str]]:
    rows = [(r[0], r[1], json.loads(r[2])) for r in
            query(data_dir, "SELECT seq, kind, data FROM events WHERE node = 'n1' ORDER BY seq")]
    return [(seq, kind, d.get("path", "")) for seq, kind, d in rows if action is None or d.get("action") == action]


@pytest.mark.slow
def test_restore_mid_stream_loses_nothing(hub_process, agent_process, tmp_path):
    data_dir, port = tmp_path / "hub", free_port()
    h = hub_process(data_dir, port).start()
    watched = tmp_path / "watched"
    watched.mkdir()
    state = tmp_path / "agent"
    join_agent(h.url, h.enroll("n1"), state)
    agent = agent_process(state, "--collectors", "files", "--watch", str(watched))

    def make(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            (watched / f"f{i:03}").write_text(f"content {i}\n")
            time.sleep(0.01)

    def stored(i: int) -> bool:
        return any(p.endswith(f"/f{i - 1:03}") for _s, _k, p in _file_events(data_dir))

    def probe() -> bool:  # the watch is set up a moment after start: poke until seen
        (watched / "probe").write_text(str(time.monotonic()))
        return any(p.endswith("/probe") for _s, _k, p in _file_events(data_dir))

    wait_for(probe, 60, interval=0.3, what="the agent's file watch")
    make(0, 30)
    wait_for(lambda: stored(30), 120, what="first 30 files stored")
    archive = tmp_path / "backup.tar.gz"
    hub_cli("backup", "--data-dir", str(data_dir), "-o", str(archive))
    with tarfile.open(archive) as tar:
        at_backup = json.loads(tar.extractfile("manifest.json").read())["nodes"]["n1"]
    make(30, 60)  # acked by the hub after the backup: the restore loses them, the agent has them
    wait_for(lambda: stored(60), 120, what="files 30..59 stored")
    r = hub_cli("restore", str(archive), "--data-dir", str(data_dir), check=False)
    assert r.returncode != 0 and "stop the hub first" in r.stderr
    h.stop()
    acked_before_stop = query(data_dir, "SELECT last_seq FROM nodes WHERE name = 'n1'")[0][0]
    assert acked_before_stop > at_backup
    make(60, 90)  # the hub is down: these wait in the agent's spool
    hub_cli("restore", str(archive), "--data-dir", str(data_dir))
    assert query(data_dir, "SELECT last_seq FROM nodes WHERE name = 'n1'")[0][0] == at_backup
    h = hub_process(data_dir, port).start()
    wait_for(lambda: stored(90), 180, what="files made while the hub was down to arrive")
    assert agent.alive()

    rows = _file_events(data_dir)
    seqs = [s for s, _k, _p in rows]
    assert len(seqs) == len(set(seqs))
    # One create per file, however busy the machine: a file whose write came after the
    # collector's settle time is a create (empty) and then a modify, two different events
    # with their own seqs (that once read as "f083 twice" when every file event was counted).
    creates = [p for _s, _k, p in _file_events(data_dir, action="create")]
    for i in range(90):  # everything, including what the hub had acked after the backup
        assert creates.count(str(watched / f"f{i:03}")) == 1, i
    # the agent kept acked events (keep_acked) and gave them back: no gap, no marker
    assert query(data_dir, "SELECT count(*) FROM events WHERE node = 'n1' AND kind = 'dropped'") == [(0,)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert acked_before_stop > at_backup


async def test_running_hub_backs_itself_up_and_keeps_the_newest(tmp_path, monkeypatch):
    from aiohttp import web

    from hub.app import create_app
    from hub.backup.web import archives
    from hub.config import load_settings

    for k in list(os.environ):
        if k.startswith("HOMELAB_"):
            monkeypatch.delenv(k)
    data_dir, bdir = tmp_path / "hub", tmp_path / "backups"
    s = load_settings(data_dir=data_dir, listen="127.0.0.1:0", backup_dir=bdir, backup_every="0.3s", backup_keep=2)
    runner = web.AppRunner(create_app(s), access_log=None)
    await runner.setup()
    try:
        deadline = time.monotonic() + 20
        seen = set()
        while time.monotonic() < deadline and len(seen) < 4:
            seen |= {p.name for p in archives(bdir)} if bdir.exists() else set()
            await asyncio.sleep(0.1)
        assert len(seen) >= 4, seen  # it kept going, every backup_every
    finally:
        await runner.cleanup()
    kept = archives(bdir)
    assert len(kept) == 2 and all(p.stat().st_mode & 0o777 == 0o600 for p in kept)
    m = backup.restore(kept[-1], tmp_path / "restored")
    assert "homelab.db" in {f["name"] for f in m["files"]}
