"""File integrity collector on real inotify: what is reported, what is not, what stays secret."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from agent import wire
from agent.collectors.files import FilesCollector
from agent.config import AGENT_OPTS
from agent.settings import load
from agent.state import State
from tests.conftest import async_wait_for


class Harness:
    def __init__(self, tmp_path, **flags):
        self.root = tmp_path / "etc"
        self.root.mkdir(exist_ok=True)
        self.flags = {"watch": [str(self.root)], "state_dir": tmp_path, **flags}
        self.state = State(tmp_path / "state.db")
        self.events: list[wire.FileChange] = []
        self.baselines: list[wire.FileBaseline] = []  # the first-start inventory, apart
        self.task = None

    def _emit(self, ev) -> bool:
        (self.baselines if isinstance(ev, wire.FileBaseline) else self.events).append(ev)
        return True

    async def start(self):
        settings = load(AGENT_OPTS, self.flags, None, env={})
        self.col = FilesCollector(settings, self._emit, self.state)
        self.task = asyncio.create_task(self.col.run())
        await async_wait_for(lambda: self.col.inotify is not None and self.col.wd_path, 5, what="watches")

    async def stop(self):
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def expect(self, n: int, what: str):
        await async_wait_for(lambda: len(self.events) >= n, 5, what=what)
        await asyncio.sleep(0.4)  # and nothing more arrives
        return self.events


@pytest.fixture
async def h(tmp_path):
    h = Harness(tmp_path)
    (h.root / "hosts").write_text("127.0.0.1 localhost\n")
    (h.root / "sub").mkdir()
    (h.root / "sub" / "app.conf").write_text("a=1\n")
    await h.start()
    yield h
    await h.stop()


async def test_first_run_is_a_quiet_baseline(h):
    await asyncio.sleep(0.5)
    assert h.events == []


async def test_first_start_inventories_the_watched_files_once(tmp_path, monkeypatch):
    from agent.collectors import files as files_mod

    monkeypatch.setattr(files_mod, "BASELINE_PART_FILES", 2)  # parts, without 500 files
    h = Harness(tmp_path)
    (h.root / "hosts").write_text("127.0.0.1 localhost\n")
    (h.root / "sub").mkdir()
    (h.root / "sub" / "app.conf").write_text("a=1\n")
    (h.root / "shadow").write_text("root:$6$salt$hash:19000::::::\n")
    os.chmod(h.root / "shadow", 0o600)
    (h.root / "blob.bin").write_bytes(b"\0\1\2")
    for scratch in ("hosts.swp", "x.tmp", "hosts~", "sources.list.dpkg-old", ".#app.conf"):
        (h.root / scratch).write_text("scratch\n")
    await h.start()
    try:
        await async_wait_for(lambda: h.baselines, 5, what="the baseline")
    finally:
        await h.stop()
    assert h.events == []  # an inventory, not a burst of "create" changes
    assert [(b.part, b.parts) for b in h.baselines] == [(1, 2), (2, 2)]
    got = {f.path: f for b in h.baselines for f in b.files}
    assert sorted(got) == sorted(str(h.root / n) for n in ("hosts", "sub/app.conf", "shadow", "blob.bin"))
    hosts = got[str(h.root / "hosts")]
    assert hosts.content == "127.0.0.1 localhost\n" and hosts.mode == 0o644 and not hosts.secret
    assert hosts.uid == os.getuid() and hosts.size == 20 and len(hosts.sha256) == 64
    shadow = got[str(h.root / "shadow")]
    assert shadow.secret and shadow.content is None and shadow.sha256 and shadow.mode == 0o600
    assert "$6$" not in b"".join(wire.encode_event(b) for b in h.baselines).decode("latin-1")
    assert got[str(h.root / "blob.bin")].content is None  # binary: hash, mode and owner only
    # the next start does not send it again
    h.baselines.clear()
    await h.start()
    try:
        (h.root / "new.conf").write_text("n\n")
        await h.expect(1, "a change after restart")
    finally:
        await h.stop()
    assert h.baselines == []


async def test_modify_has_hash_and_diff(h):
    (h.root / "hosts").write_text("127.0.0.1 localhost\n10.0.0.2 nas\n")
    (ev,) = await h.expect(1, "modify")
    assert ev.action == "modify" and ev.path == str(h.root / "hosts") and ev.content_changed
    assert ev.old_sha256 and ev.sha256 != ev.old_sha256 and ev.size == len("127.0.0.1 localhost\n10.0.0.2 nas\n")
    assert "+10.0.0.2 nas" in ev.diff and ev.mode == 0o644 and not ev.secret


async def test_touch_and_identical_rewrite_are_not_changes(h):
    os.utime(h.root / "hosts", (1, 1))
    (h.root / "hosts").write_text("127.0.0.1 localhost\n")  # same bytes
    await asyncio.sleep(0.8)
    assert h.events == []


async def test_chmod_is_attrib_without_content_change(h):
    os.chmod(h.root / "hosts", 0o600)
    (ev,) = await h.expect(1, "attrib")
    assert ev.action == "attrib" and not ev.content_changed and ev.mode == 0o600 and ev.diff is None


async def test_create_delete_move_and_new_directory(h):
    (h.root / "new.conf").write_text("x\n")
    (h.root / "sub" / "app.conf").rename(h.root / "sub" / "app.conf.bak")
    (h.root / "hosts").unlink()
    (h.root / "d2").mkdir()
    (h.root / "d2" / "inner.conf").write_text("y\n")
    events = await h.expect(4, "create, move, delete, nested create")
    got = {(e.action, e.path) for e in events}
    assert ("create", str(h.root / "new.conf")) in got
    assert ("delete", str(h.root / "hosts")) in got
    assert ("move", str(h.root / "sub" / "app.conf.bak")) in got
    assert ("create", str(h.root / "d2" / "inner.conf")) in got
    move = next(e for e in events if e.action == "move")
    assert move.src_path == str(h.root / "sub" / "app.conf")
    # a file created in the new directory after its watch exists
    (h.root / "d2" / "later.conf").write_text("z\n")
    await h.expect(5, "create in new dir")
    assert h.events[-1].path == str(h.root / "d2" / "later.conf")


async def test_secret_files_never_send_content(h):
    p = h.root / "shadow"
    p.write_text("root:$6$salt$hash:19000:0:99999:7:::\n")
    os.chmod(p, 0o640)
    await h.expect(1, "create")
    p.write_text("root:$6$other$hash2:19001:0:99999:7:::\n")
    events = await h.expect(2, "modify")
    for ev in events:
        assert ev.secret and ev.diff is None and ev.sha256
        assert "$6$" not in wire.encode_event(ev).decode("latin-1")
    # nothing of the content is kept in the agent's baseline either
    row = h.state.db.execute("SELECT content FROM file_baseline WHERE path = ?", (str(p),)).fetchone()
    assert row == (None,)


async def test_opted_in_secret_path_gets_a_diff(tmp_path):
    h = Harness(tmp_path, content_paths=[str(tmp_path / "etc" / "wpa")])
    p = h.root / "wpa"
    p.write_text("psk=one\n")
    os.chmod(p, 0o600)
    await h.start()
    try:
        p.write_text("psk=two\n")
        (ev,) = await h.expect(1, "modify")
        assert not ev.secret and "+psk=two" in ev.diff
    finally:
        await h.stop()


async def test_excludes(tmp_path):
    h = Harness(tmp_path, exclude=["*.swp", str(tmp_path / "etc" / "cache") + "*"])
    (h.root / "cache").mkdir()
    await h.start()
    try:
        (h.root / ".x.swp").write_text("junk")
        (h.root / "cache" / "blob").write_text("junk")
        (h.root / "real.conf").write_text("ok\n")
        events = await h.expect(1, "only the real file")
        assert [e.path for e in events] == [str(h.root / "real.conf")]
    finally:
        await h.stop()


async def test_changes_while_stopped_are_reported_at_start(tmp_path):
    h = Harness(tmp_path)
    (h.root / "a.conf").write_text("1\n")
    (h.root / "b.conf").write_text("1\n")
    await h.start()
    await h.stop()
    (h.root / "a.conf").write_text("2\n")
    (h.root / "b.conf").unlink()
    (h.root / "c.conf").write_text("new\n")
    h.events.clear()
    await h.start()
    try:
        events = await h.expect(3, "offline changes")
        assert {(e.action, os.path.basename(e.path)) for e in events} == {
            ("modify", "a.conf"), ("delete", "b.conf"), ("create", "c.conf")}
    finally:
        await h.stop()


def test_missing_watch_path_is_a_clear_error(tmp_path):
    settings = load(AGENT_OPTS, {"watch": [str(tmp_path / "nope")], "state_dir": tmp_path}, None, env={})
    with pytest.raises(ValueError, match="does not exist"):
        FilesCollector(settings, lambda e: True, State(tmp_path / "s.db"))
