"""Packages collector: a real dpkg install, upgrade, removal and purge of a tiny package built
here with dpkg-deb (no network), plus the log parsers of dpkg, dnf/rpm, pacman and apt."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import wire
from agent.collectors.packages import (
    AptHistory,
    Dpkg,
    LogTail,
    PackagesCollector,
    parse_apt_simulation,
    parse_dpkg,
    parse_extended_states,
    parse_pacman,
    parse_rpm,
)
from agent.config import AGENT_OPTS
from agent.settings import load
from agent.state import State


def settings(**kw):
    return load(AGENT_OPTS, kw, None, env={})


# --- parsers -----------------------------------------------------------------------------


def test_parse_dpkg():
    ts = time.mktime(time.strptime("2026-11-25 17:19:40", "%Y-%m-%d %H:%M:%S"))
    assert parse_dpkg("2026-11-25 17:19:40 install zsh:amd64 <none> 5.9-4+b15") == wire.Package(
        ts=ts, action="install", manager="dpkg", name="zsh", arch="amd64", version="5.9-4+b15")
    up = parse_dpkg("2026-11-25 17:19:40 upgrade libc-bin:amd64 2.36-9+deb12u13 2.36-9+deb12u14")
    assert (up.action, up.version, up.old_version) == ("upgrade", "2.36-9+deb12u14", "2.36-9+deb12u13")
    rm = parse_dpkg("2026-11-25 17:19:40 remove foo:all 1.0 <none>")
    assert (rm.action, rm.arch, rm.version, rm.old_version) == ("remove", "all", None, "1.0")
    assert parse_dpkg("2026-11-25 17:19:40 purge foo:all 1.0 <none>").action == "purge"
    # config files left behind, then installed again: an upgrade from the old version
    assert parse_dpkg("2026-11-25 17:19:40 install foo:all 1.0 1.1").action == "upgrade"
    for noise in ("2026-11-25 17:19:40 status installed libc-bin:amd64 2.36-9",
                  "2026-11-25 17:19:40 trigproc libc-bin:amd64 2.36-9 <none>",
                  "2026-11-25 17:19:40 startup archives unpack", "", "garbage"):
        assert parse_dpkg(noise) is None


def test_parse_rpm():
    ev = parse_rpm("2023-10-01T10:00:00+0000 SUBDEBUG Upgrade: bash-5.2.21-1.fc39.x86_64")
    assert (ev.action, ev.name, ev.version, ev.arch, ev.manager) == ("upgrade", "bash", "5.2.21-1.fc39", "x86_64", "rpm")
    assert ev.ts == 1696154400.0
    ev = parse_rpm("2023-10-01T10:00:00Z SUBDEBUG Erase: python3-libs-3.12.0-1.fc39.x86_64")
    assert (ev.action, ev.name, ev.old_version) == ("remove", "python3-libs", "3.12.0-1.fc39")
    assert parse_rpm("2023-10-01T10:00:00+0000 SUBDEBUG Installed: tzdata-2023c-2.fc39.noarch").action == "install"
    assert parse_rpm("2023-10-01T10:00:00+0000 SUBDEBUG Upgraded: bash-5.2.15-5.fc39.x86_64") is None
    assert parse_rpm("2023-10-01T10:00:00+0000 INFO --- logging initialized ---") is None


def test_parse_pacman():
    ev = parse_pacman("[2024-01-01T10:00:00+0000] [ALPM] upgraded bash (5.2.015-1 -> 5.2.021-1)")
    assert (ev.action, ev.name, ev.old_version, ev.version, ev.ts) == ("upgrade", "bash", "5.2.015-1", "5.2.021-1", 1704103200.0)
    assert parse_pacman("[2024-01-01T10:00:00+0000] [ALPM] installed htop (3.3.0-1)").version == "3.3.0-1"
    rm = parse_pacman("[2024-01-01T10:00:00+0000] [ALPM] removed htop (3.3.0-1)")
    assert (rm.action, rm.old_version) == ("remove", "3.3.0-1")
    assert parse_pacman("[2024-01-01T10:00:00+0000] [ALPM] downgraded vim (9.1-1 -> 9.0-1)").action == "downgrade"
    assert parse_pacman("[2019-03-01 10:00] [ALPM] installed nano (4.0-1)").name == "nano"
    assert parse_pacman("[2024-01-01T10:00:00+0000] [PACMAN] Running 'pacman -Syu'") is None


def test_parse_apt_simulation():
    text = (
        "Reading package lists...\n"
        "Inst base-files [12.4+deb12u11] (12.4+deb12u15 Debian:12.15/oldstable [amd64])\n"
        "Inst libgcrypt20-dev [1.10.1-3] (1.10.1-3+deb12u1 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64]) []\n"
        "Inst newdep (2.0-1 Ubuntu:22.04/jammy-security [all])\n"
        "Conf base-files (12.4+deb12u15 Debian:12.15/oldstable [amd64])\n"
    )
    assert parse_apt_simulation(text) == [
        wire.PendingUpdate("base-files", "12.4+deb12u11", "12.4+deb12u15", False),
        wire.PendingUpdate("libgcrypt20-dev", "1.10.1-3", "1.10.1-3+deb12u1", True),
        wire.PendingUpdate("newdep", "", "2.0-1", True),
    ]


def test_parse_extended_states():
    text = ("Package: dpkg\nArchitecture: amd64\nAuto-Installed: 1\n\n"
            "Package: vim\nArchitecture: amd64\nAuto-Installed: 0\n\n"
            "Package: tzdata\nArchitecture: all\nAuto-Installed: 1")
    assert parse_extended_states(text) == {("dpkg", "amd64"), ("tzdata", "all")}


def test_log_tail_rotation_and_truncation(tmp_path):
    log = tmp_path / "dpkg.log"
    log.write_text("old history\n")
    state = State(tmp_path / "s.db")
    t = LogTail(str(log), state, "k")
    assert t.start() is False and t.read() == []  # first run: history skipped
    with open(log, "a") as f:
        f.write("one\ntwo\nhalf")
    assert t.read() == ["one", "two"]
    with open(log, "a") as f:
        f.write("-line\nthree\n")
    os.rename(log, tmp_path / "dpkg.log.1")  # rotated before we read "three"
    log.write_text("four\n")
    assert t.read() == ["half-line", "three", "four"]
    log.write_text("")  # truncated in place
    assert t.read() == []
    log.write_text("five\n")
    assert t.read() == ["five"]
    assert LogTail(str(log), state, "k").start() is True
    state.close()


def test_apt_history_says_who_and_how(tmp_path, monkeypatch):
    log = tmp_path / "history.log"
    log.write_text("")
    monkeypatch.setattr(AptHistory, "path", str(log))
    state = State(tmp_path / "s.db")
    h = AptHistory(state)
    h.start()
    log.write_text(
        "\nStart-Date: 2026-11-25  10:00:00\n"
        "Commandline: apt-get -o Acquire::http::Proxy=http://bob:hunter2@proxy:3128 install htop\n"
        "Requested-By: alice (1000)\n"
        "Install: htop:amd64 (3.2.2-2)\n"
        "End-Date: 2026-11-25  10:00:05\n"
        "\nStart-Date: 2026-11-25  11:00:00\n"
        "Commandline: apt-get upgrade\n")  # still running: no End-Date yet
    h.refresh()
    at = lambda s: time.mktime(time.strptime(s, "%Y-%m-%d %H:%M:%S"))  # noqa: E731
    user, command = h.who(at("2026-11-25 10:00:03"))
    assert user == "alice" and "apt-get" in command and "install htop" in command
    assert "hunter2" not in command  # a proxy password on the command line never leaves the node
    assert h.who(at("2026-11-25 11:00:09")) == ("root", "apt-get upgrade")  # no sudo: root asked
    assert h.who(at("2026-11-25 10:30:00")) == (None, None)  # plain dpkg between apt runs
    state.close()


# --- real dpkg ----------------------------------------------------------------------------

needs_dpkg = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("dpkg-deb") and Dpkg.present()), reason="needs root and dpkg")


def build_deb(tmp_path, name: str, version: str):
    root = tmp_path / f"{name}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: Test <t@example.invalid>\n"
        "Description: homelab collector test package\n")
    (root / "usr" / "share" / "doc" / name).mkdir(parents=True)
    (root / "usr" / "share" / "doc" / name / "README").write_text("test\n")
    # a conffile, so that removal leaves config files behind and purge has something to do
    (root / "etc").mkdir()
    (root / "etc" / f"{name}.conf").write_text("setting = 1\n")
    (root / "DEBIAN" / "conffiles").write_text(f"/etc/{name}.conf\n")
    deb = tmp_path / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True, capture_output=True)
    return deb


def dpkg(*args):
    """dpkg, retried briefly while another process holds its lock."""
    for _ in range(60):
        r = subprocess.run(["dpkg", *args], capture_output=True, text=True)
        if r.returncode == 0:
            return r
        if "lock" not in r.stderr:
            raise AssertionError(f"dpkg {args}: {r.stderr}")
        time.sleep(0.5)
    raise AssertionError(f"dpkg {args}: still locked")


@pytest.fixture
def test_package(tmp_path):
    name = f"homelab-test-{uuid.uuid4().hex[:10]}"
    yield name
    subprocess.run(["dpkg", "--purge", name], capture_output=True, check=False)


@needs_dpkg
async def test_real_install_upgrade_remove_purge(tmp_path, test_package):
    name = test_package
    v1, v2 = build_deb(tmp_path, name, "1.0"), build_deb(tmp_path, name, "1.1")
    events: list = []
    state = State(tmp_path / "state.db")
    c = PackagesCollector(settings(packages_poll=0.1, packages_settle=0.3, pending_updates_interval=0),
                          lambda e: events.append(e) or True, state)
    task = asyncio.create_task(c.run())

    async def wait(cond, what):
        deadline = time.monotonic() + 30
        while not cond():
            assert not task.done(), task
            assert time.monotonic() < deadline, f"timed out waiting for {what}; got {[e for e in events if not isinstance(e, wire.PackageInventory)]}"
            await asyncio.sleep(0.05)

    def mine(action):
        return [e for e in events if isinstance(e, wire.Package) and e.name == name and e.action == action]

    def inventories():
        return [e for e in events if isinstance(e, wire.PackageInventory)]

    try:
        await wait(lambda: inventories(), "the start inventory")
        start_inv = inventories()[0]
        assert start_inv.manager == "dpkg" and len(start_inv.packages) > 50
        assert any(p.name == "dpkg" for p in start_inv.packages)
        assert not any(p.name == name for p in start_inv.packages)

        dpkg("-i", str(v1))
        await wait(lambda: mine("install"), "install event")
        ev = mine("install")[0]
        assert (ev.version, ev.arch, ev.manager) == ("1.0", "all", "dpkg")
        await wait(lambda: any(p.name == name for p in inventories()[-1].packages), "inventory after install")
        info = next(p for p in inventories()[-1].packages if p.name == name)
        assert (info.version, info.manual) == ("1.0", True)

        dpkg("-i", str(v2))
        await wait(lambda: mine("upgrade"), "upgrade event")
        assert (mine("upgrade")[0].old_version, mine("upgrade")[0].version) == ("1.0", "1.1")
        dpkg("-i", str(v1))
        await wait(lambda: mine("downgrade"), "downgrade event")
        assert (mine("downgrade")[0].old_version, mine("downgrade")[0].version) == ("1.1", "1.0")

        dpkg("-r", name)
        await wait(lambda: mine("remove"), "remove event")
        assert mine("remove")[0].old_version == "1.0"
        await wait(lambda: not any(p.name == name for p in inventories()[-1].packages), "inventory after remove")
        dpkg("--purge", name)
        await wait(lambda: mine("purge"), "purge event")
        for e in events:
            wire.encode_event(e)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # Changes made while the agent is stopped are reported when it starts again.
    dpkg("-i", str(v2))
    events.clear()
    c2 = PackagesCollector(settings(packages_poll=0.1, pending_updates_interval=0),
                           lambda e: events.append(e) or True, state)
    task = asyncio.create_task(c2.run())
    try:
        await wait(lambda: mine("install"), "install seen at start")
        assert mine("install")[0].version == "1.1"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        state.close()


@needs_dpkg
@pytest.mark.skipif(not shutil.which("apt-get"), reason="no apt")
async def test_pending_updates_simulation_changes_nothing(tmp_path):
    status_before = os.stat("/var/lib/dpkg/status").st_mtime_ns
    events: list = []
    state = State(tmp_path / "s.db")
    c = PackagesCollector(settings(), lambda e: events.append(e) or True, state)
    await c.check_pending()
    state.close()
    assert len(events) == 1 and isinstance(events[0], wire.PendingUpdates) and events[0].manager == "apt"
    # Cross-check with apt itself: the same package names, in the same order.
    out = subprocess.run(["apt-get", "-s", "upgrade"], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}).stdout
    expected = [line.split()[1] for line in out.splitlines() if line.startswith("Inst ")]
    assert [u.name for u in events[0].updates] == expected
    assert os.stat("/var/lib/dpkg/status").st_mtime_ns == status_before


@pytest.mark.parametrize("key,value", [("packages_poll", 0.01), ("pending_updates_interval", 5), ("packages_settle", -1)])
def test_settings_validated(tmp_path, key, value):
    state = State(tmp_path / "s.db")
    with pytest.raises(ValueError, match=key):
        PackagesCollector(settings(**{key: value}), lambda e: True, state)
    state.close()


@needs_dpkg
@pytest.mark.skipif(not shutil.which("apt-get"), reason="no apt")
async def test_apt_install_records_who_asked(tmp_path, test_package):
    deb = build_deb(tmp_path, test_package, "2.0")
    events: list = []
    state = State(tmp_path / "state.db")
    c = PackagesCollector(settings(packages_poll=0.1, packages_settle=0.3, pending_updates_interval=0),
                          lambda e: events.append(e) or True, state)
    task = asyncio.create_task(c.run())
    try:
        deadline = time.monotonic() + 30
        while not any(isinstance(e, wire.PackageInventory) for e in events):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        # apt installs a local .deb without the network; SUDO_UID is how apt learns who asked
        r = subprocess.run(["apt-get", "install", "-y", "-q", str(deb)], capture_output=True, text=True,
                           env={**os.environ, "SUDO_UID": "65534", "DEBIAN_FRONTEND": "noninteractive"}, timeout=120)
        if r.returncode != 0 and "lock" in r.stderr:
            pytest.skip(f"apt is busy: {r.stderr.strip()[-200:]}")
        assert r.returncode == 0, r.stderr
        while not [e for e in events if isinstance(e, wire.Package) and e.name == test_package]:
            assert time.monotonic() < deadline + 30, "no install event"
            await asyncio.sleep(0.05)
        ev = next(e for e in events if isinstance(e, wire.Package) and e.name == test_package)
        assert (ev.action, ev.version, ev.user) == ("install", "2.0", "nobody")
        assert ev.command.startswith("apt-get install -y -q") and str(deb) in ev.command
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        state.close()


@needs_dpkg
@pytest.mark.skipif(not shutil.which("apt-get"), reason="no apt")
async def test_pending_loop_waits_after_start_and_remembers(tmp_path, monkeypatch):
    import agent.collectors.packages as packages

    monkeypatch.setattr(packages, "PENDING_START_DELAY", (0.5, 0.5))
    events: list = []
    state = State(tmp_path / "s.db")

    async def run_for(seconds):
        c = PackagesCollector(settings(pending_updates_interval=60, packages_poll=0.2), lambda e: events.append(e) or True, state)
        task = asyncio.create_task(c.run())
        started = time.monotonic()
        try:
            while time.monotonic() - started < seconds:
                if any(isinstance(e, wire.PendingUpdates) for e in events):
                    return time.monotonic() - started
                await asyncio.sleep(0.05)
            return None
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    took = await run_for(60)
    assert took is not None and took >= 0.5  # not at start: after the start delay
    assert state.get("packages.pending.checked") > time.time() - 120
    events.clear()
    assert await run_for(2) is None  # restarted: checked a moment ago, not due for a minute
    state.close()


# --- properties ---------------------------------------------------------------------------

_token = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=":<>"), min_size=1, max_size=30)


@given(st.text(max_size=300))
def test_parsers_never_raise_on_arbitrary_lines(line):
    for parse in (parse_dpkg, parse_rpm, parse_pacman):
        ev = parse(line)
        assert ev is None or isinstance(ev, wire.Package)
    assert isinstance(parse_apt_simulation(line), list)
    parse_extended_states(line)


@given(st.sampled_from(["install", "upgrade", "remove", "purge"]), _token, st.sampled_from(["amd64", "all", "arm64"]), _token, _token)
def test_dpkg_lines_round_trip(action, name, arch, old, new):
    old_v = "<none>" if action == "install" else old
    new_v = "<none>" if action in ("remove", "purge") else new
    ev = parse_dpkg(f"2026-01-02 03:04:05 {action} {name}:{arch} {old_v} {new_v}")
    assert ev is not None and (ev.name, ev.arch, ev.action) == (name, arch, action)
    if action in ("remove", "purge"):
        assert ev.old_version == old and ev.version is None
    else:
        assert ev.version == new
    wire.encode_event(ev)


async def test_held_changes_over_the_cap_are_all_sent(tmp_path, monkeypatch):
    import agent.collectors.packages as packages

    monkeypatch.setattr(packages, "HOLD_MAX", 2)
    log = tmp_path / "dpkg.log"
    log.write_text("")
    events: list = []
    state = State(tmp_path / "s.db")
    c = PackagesCollector(settings(pending_updates_interval=0), lambda e: events.append(e) or True, state)
    m = packages.Dpkg()
    c.tails["dpkg"] = LogTail(str(log), state, "t", autocommit=False)
    c.tails["dpkg"].start()
    c.apt = None
    log.write_text("".join(f"2026-01-01 00:00:0{i} install p{i}:all <none> 1.0\n" for i in range(5)))
    assert await c.follow(m) == 5
    c.release(m)
    assert [e.name for e in events] == [f"p{i}" for i in range(5)]
    assert state.get("t")["pos"] == log.stat().st_size  # saved once handed on
    state.close()


async def test_commands_time_out_and_are_killed_when_cancelled(monkeypatch):
    import agent.collectors.packages as packages

    marker = f"hl-{uuid.uuid4().hex}"

    def running():
        found = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if marker.encode() in f.read():
                            found.append(pid)
                except OSError:
                    pass
        return found

    monkeypatch.setattr(packages, "CMD_TIMEOUT", 0.3)
    with pytest.raises(RuntimeError, match="timed out"):
        await packages.run_cmd("sh", "-c", f"sleep 30; : {marker}")
    assert running() == []
    monkeypatch.setattr(packages, "CMD_TIMEOUT", 60)
    task = asyncio.create_task(packages.run_cmd("sh", "-c", f"sleep 30; : {marker}"))
    for _ in range(100):
        if running():
            break
        await asyncio.sleep(0.02)
    assert running()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert running() == []


async def _follow_own_log(tmp_path, monkeypatch, log_dir, **kw):
    """The collector on a dpkg log of the test's own (dpkg's format, written here); yields
    its events list and task once the start inventory is out."""
    monkeypatch.setattr(Dpkg, "log_path", str(log_dir / "dpkg.log"))
    events: list = []
    state = State(tmp_path / "state.db")
    c = PackagesCollector(settings(pending_updates_interval=0, **kw), lambda e: events.append(e) or True, state)
    task = asyncio.create_task(c.run())
    deadline = time.monotonic() + 60
    while not any(isinstance(e, wire.PackageInventory) for e in events):
        assert not task.done() and time.monotonic() < deadline
        await asyncio.sleep(0.05)
    return c, events, task, state


async def _until(cond, seconds, what, task):
    deadline = time.monotonic() + seconds
    while not cond():
        assert not task.done(), task
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _dpkg_line(verb: str, name: str, old: str, new: str) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M:%S')} {verb} {name}:all {old} {new}\n"


@needs_dpkg
async def test_a_written_log_is_read_at_once_not_at_the_next_poll(tmp_path, monkeypatch):
    """With inotify on the log's directory the collector looks when the log is written:
    packages_poll (60 s here) only paces a burst and a log inotify cannot watch. A rotation
    (dpkg.log -> dpkg.log.1 and a new dpkg.log) is followed the same way."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    path = log_dir / "dpkg.log"
    path.write_text("")
    c, events, task, state = await _follow_own_log(tmp_path, monkeypatch, log_dir, packages_poll=60, packages_settle=0.2)

    def names():
        return [(e.action, e.name) for e in events if isinstance(e, wire.Package)]

    try:
        assert c.ino is not None
        # another log beside it (rsyslog's, beside dpkg.log) queues no event, so it wakes
        # nothing: no await in between, so the loop's own reader cannot take them first
        (log_dir / "syslog").write_text("")  # its creation is an event of the directory's
        c.ino.read(timeout=0)
        with open(log_dir / "syslog", "a") as f:
            for i in range(50):
                f.write(f"line {i}\n")
                f.flush()
        assert c.ino.read(timeout=0) == []
        with open(path, "a") as f:
            f.write(_dpkg_line("install", "lab-one", "<none>", "1.0"))
        await _until(lambda: names() == [("install", "lab-one")], 15, "the install", task)
        path.rename(log_dir / "dpkg.log.1")
        (log_dir / "dpkg.log").write_text(_dpkg_line("remove", "lab-one", "1.0", "<none>"))
        await _until(lambda: names()[1:] == [("remove", "lab-one")], 15, "the remove after rotation", task)
        with open(log_dir / "dpkg.log", "a") as f:  # the new log is watched too
            f.write(_dpkg_line("install", "lab-three", "<none>", "3.0"))
        await _until(lambda: names()[2:] == [("install", "lab-three")], 15, "a write to the new log", task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        state.close()
    assert c.ino is None  # the watch is closed with the collector


@needs_dpkg
async def test_without_a_watch_the_log_is_polled(tmp_path, monkeypatch):
    """No directory to watch at start (it appears later): every packages_poll, as before."""
    log_dir = tmp_path / "later"
    c, events, task, state = await _follow_own_log(tmp_path, monkeypatch, log_dir, packages_poll=0.2, packages_settle=0.2)
    try:
        assert c.ino is None
        log_dir.mkdir()
        (log_dir / "dpkg.log").write_text(_dpkg_line("install", "lab-two", "<none>", "2.0"))
        await _until(lambda: any(isinstance(e, wire.Package) and e.name == "lab-two" for e in events), 15,
                     "the install", task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        state.close()
