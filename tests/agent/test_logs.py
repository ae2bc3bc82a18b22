"""The logs collector on real files (append, rotation, truncation, restarts, floods) and on a
real journal written by systemd-journal-remote and read through libsystemd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent import wire
from agent.collectors import logs as logsmod
from agent.collectors.logs import LogsCollector
from agent.config import AGENT_OPTS
from agent.settings import load
from agent.state import State
from tests.conftest import async_wait_for, join_agent, wait_for

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"


class Harness:
    def __init__(self, tmp_path: Path, files: list[Path], capacity: int | None = None, **flags):
        self.tmp_path = tmp_path
        self.flags = {"state_dir": tmp_path, "log_files": [str(f) for f in files],
                      "log_journal": False, **flags}
        self.capacity = capacity
        self.events: list = []
        self.refused = 0
        self.task: asyncio.Task | None = None
        self.positions: dict[str, str] = {}

    def _emit(self, e, at=None) -> bool:
        if self.capacity is not None and len(self.events) >= self.capacity:
            self.refused += 1
            return False
        self.events.append(e)
        if at is not None:  # as the agent does: the position goes with the event
            self.positions[at[0]] = at[1]
        return True

    @property
    def logs(self) -> list[wire.Log]:
        return [e for e in self.events if isinstance(e, wire.Log)]

    def messages(self) -> list[str]:
        return [e.message for e in self.logs]

    async def start(self):
        self.state = State(self.tmp_path / "state.db")
        self.state.positions = self.positions
        settings = load(AGENT_OPTS, self.flags, None, env={})
        self.col = LogsCollector(settings, self._emit, self.state)
        self.task = asyncio.create_task(self.col.run())
        await asyncio.sleep(0.2)  # first pass: positions taken

    async def stop(self):
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.state.close()

    async def expect(self, messages: list[str], timeout: float = 10):
        await async_wait_for(lambda: len(self.logs) >= len(messages), timeout,
                             what=f"{len(messages)} lines (have {self.messages()[-5:]})")
        await asyncio.sleep(0.2)  # and no more than that
        assert self.messages() == messages


def line(i: int, prog: str = "app") -> str:
    return f"Nov 25 10:00:{i % 60:02d} host1 {prog}[{100 + i}]: message {i}\n"


def append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


async def test_follows_new_lines_parsed(tmp_path):
    f = tmp_path / "app.log"
    f.write_text(line(0) + line(1))  # history: not shipped on first sight
    h = Harness(tmp_path, [f])
    await h.start()
    append(f, line(2) + "<11>1 2025-01-01T00:00:00Z web nginx 77 - - upstream down\n" + "a partial")
    await h.expect(["message 2", "upstream down"])
    a, b = h.logs
    assert (a.source, a.program, a.pid, a.host) == (str(f), "app", 102, "host1")
    assert (b.program, b.pid, b.severity, b.facility, b.ts) == ("nginx", 77, 3, "user", 1735689600.0)
    append(f, " line\n")  # the partial line completes
    await h.expect(["message 2", "upstream down", "a partial line"])
    await h.stop()


async def test_file_that_appears_later_is_read_from_its_start(tmp_path):
    f = tmp_path / "later.log"
    h = Harness(tmp_path, [f])
    await h.start()
    f.write_text(line(1) + line(2))
    await h.expect(["message 1", "message 2"])
    await h.stop()


async def test_rotation_loses_and_repeats_nothing(tmp_path):
    f = tmp_path / "syslog"
    f.write_text("")
    h = Harness(tmp_path, [f])
    await h.start()
    with open(f, "a") as w:  # a writer that keeps its handle across the rename, as daemons do
        w.write(line(1))
        w.flush()
        await async_wait_for(lambda: h.logs, 5, what="first line")
        os.rename(f, str(f) + ".1")
        f.write_text("")  # logrotate's "create": the new file exists, still empty
        await asyncio.sleep(0.5)  # the collector has looked at both by now
        w.write(line(2))  # the writer has not reopened yet: still into the rotated file
        w.flush()
        await asyncio.sleep(0.5)
    append(f, line(3))  # reopened (postrotate HUP): into the new file
    append(f, line(4))
    await h.expect(["message 1", "message 2", "message 3", "message 4"])
    await h.stop()


async def test_truncation_starts_over(tmp_path):
    f = tmp_path / "app.log"
    f.write_text("")
    h = Harness(tmp_path, [f])
    await h.start()
    append(f, line(1) * 50)
    await async_wait_for(lambda: len(h.logs) == 50, 5, what="50 lines")
    with open(f, "w") as w:  # copytruncate / > file
        w.write(line(2))
    await h.expect(["message 1"] * 50 + ["message 2"])
    await h.stop()


async def test_position_survives_restart_and_rotation_while_stopped(tmp_path):
    f = tmp_path / "app.log"
    f.write_text("")
    h = Harness(tmp_path, [f])
    await h.start()
    append(f, line(1))
    await h.expect(["message 1"])
    await h.stop()
    append(f, line(2))  # written while the agent is stopped
    h2 = Harness(tmp_path, [f])
    await h2.start()
    await h2.expect(["message 2"])
    await h2.stop()
    append(f, line(3))
    os.rename(f, str(f) + ".1")  # rotated while stopped, with an unread line in it
    f.write_text(line(4))
    h3 = Harness(tmp_path, [f])
    await h3.start()
    await h3.expect(["message 3", "message 4"])
    await h3.stop()


async def test_a_quiet_file_costs_no_state_write(tmp_path):
    """Positions are saved once a second, but only those that moved are written."""
    f = tmp_path / "app.log"
    f.write_text("")
    h = Harness(tmp_path, [f])
    await h.start()
    append(f, line(1))
    await h.expect(["message 1"])
    key = f"logs.file:{f}"
    await async_wait_for(lambda: (h.state.get(key) or {}).get("off") == f.stat().st_size, 10,
                         what="the position saved")
    written = h.state.db.total_changes
    h.col.save()
    h.col.save()
    assert h.state.db.total_changes == written
    append(f, line(2))
    await h.expect(["message 1", "message 2"])
    h.col.save()
    h.col.save()  # one save behind: the second stores where the first saw the file
    assert h.state.get(key)["off"] == f.stat().st_size and h.state.db.total_changes > written
    await h.stop()


async def test_long_lines_are_cut_and_binary_is_kept_readable(tmp_path):
    f = tmp_path / "app.log"
    f.write_text("")
    h = Harness(tmp_path, [f])
    await h.start()
    with open(f, "ab") as w:
        w.write(b"x" * (logsmod.MAX_LINE * 3) + b"\n" + b"after \xff\xfe bytes\n")
    await async_wait_for(lambda: len(h.logs) == 2, 5, what="two lines")
    assert len(h.logs[0].message) == logsmod.MAX_LINE and set(h.logs[0].message) == {"x"}
    assert h.logs[1].message == "after \ufffd\ufffd bytes"
    await h.stop()


async def test_over_rate_lines_are_shed_and_counted(tmp_path):
    f = tmp_path / "app.log"
    f.write_text("")
    h = Harness(tmp_path, [f], log_max_rate=100)  # burst 1,000
    await h.start()
    append(f, line(1) * 5000)
    await async_wait_for(lambda: h.col.stats["lines"] == 5000, 10, what="all lines read")
    shipped = len(h.logs)
    assert 1000 <= shipped < 1200 and h.col.stats["shed"] == 5000 - shipped
    await h.stop()  # the count is reported on stop at the latest
    notices = [e for e in h.events if isinstance(e, wire.Notice)]
    assert notices and f"shed {5000 - shipped} log lines" in notices[-1].message


async def test_full_queue_is_counted_and_reading_goes_on(tmp_path):
    f = tmp_path / "app.log"
    f.write_text("")
    h = Harness(tmp_path, [f], capacity=100, log_max_rate=0)
    await h.start()
    append(f, line(1) * 3000)
    await async_wait_for(lambda: h.col.stats["lines"] == 3000, 10, what="all lines read")
    assert len(h.logs) == 100 and h.refused == 2900 and h.col.stats["queue_full"] == 2900
    await h.stop()


def test_unavailable_and_bad_settings(tmp_path):
    s = load(AGENT_OPTS, {"state_dir": tmp_path, "log_journal": False}, None, env={})
    reason = LogsCollector.unavailable(s)
    if not any(os.path.exists(p) for p in logsmod.SYSLOG_FILES):
        assert reason and "--log-file" in reason
    s = load(AGENT_OPTS, {"state_dir": tmp_path, "log_files": ["/nonexistent-dir/x.log"]}, None, env={})
    with pytest.raises(ValueError, match="nonexistent-dir"):
        LogsCollector(s, lambda e: True, State(tmp_path / "s.db"))


# --- a real journal ---------------------------------------------------------------------


needs_journal = pytest.mark.skipif(not os.path.exists(JOURNAL_REMOTE), reason="needs systemd-journal-remote")


def journal_write(directory: Path, entries: list[dict]) -> None:
    """Append entries to a real journal file, as systemd-journal-remote writes them."""
    export = b""
    for i, e in enumerate(entries):
        fields = {"__REALTIME_TIMESTAMP": str(int(time.time() * 1e6) + i),
                  "__MONOTONIC_TIMESTAMP": str(int(time.monotonic() * 1e6) + i),
                  "_BOOT_ID": "0123456789abcdef0123456789abcdef", **e}
        for k, v in fields.items():  # bytes in the export format's binary form
            export += (k.encode() + b"\n" + len(v).to_bytes(8, "little") + v + b"\n"
                       if isinstance(v, bytes) else f"{k}={v}\n".encode())
        export += b"\n"
    r = subprocess.run([JOURNAL_REMOTE, f"--output={directory / 'remote.journal'}", "--split-mode=none", "-"],
                       input=export, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr


@needs_journal
async def test_journal_with_persisted_cursor(tmp_path):
    jdir = tmp_path / "journal"
    jdir.mkdir()
    entry = {"SYSLOG_IDENTIFIER": "sshd", "_PID": "4242", "PRIORITY": "3", "SYSLOG_FACILITY": "10",
             "_HOSTNAME": "nas", "_SYSTEMD_UNIT": "ssh.service"}
    journal_write(jdir, [{**entry, "MESSAGE": "before the agent"}])
    h = Harness(tmp_path, [], log_journal=True, journal_dir=str(jdir))
    assert LogsCollector.unavailable(load(AGENT_OPTS, h.flags, None, env={})) is None
    await h.start()
    journal_write(jdir, [{**entry, "MESSAGE": "Failed password for root"}, {"MESSAGE": "plain", "_COMM": "cron"}])
    await h.expect(["Failed password for root", "plain"], timeout=15)
    a = h.logs[0]
    assert (a.source, a.program, a.pid, a.severity, a.facility, a.host, a.unit) == (
        "journald", "sshd", 4242, 3, "authpriv", "nas", "ssh.service")
    await h.stop()
    assert h.positions["journald"].startswith("s=")
    journal_write(jdir, [{"MESSAGE": "while stopped", "_COMM": "x"}])
    h2 = Harness(tmp_path, [], log_journal=True, journal_dir=str(jdir))
    h2.positions = dict(h.positions)  # what the agent reads back from its spool
    await h2.start()
    journal_write(jdir, [{"MESSAGE": "after restart", "_COMM": "x"}])
    await h2.expect(["while stopped", "after restart"], timeout=15)
    await h2.stop()


@needs_journal
async def test_journal_first_start_ships_only_what_comes_after_it(tmp_path):
    jdir = tmp_path / "journal"
    jdir.mkdir()
    h = Harness(tmp_path, [], log_journal=True, journal_dir=str(jdir))
    await h.start()  # an empty journal: everything it gets is new
    journal_write(jdir, [{"MESSAGE": f"first {i}", "_COMM": "x"} for i in range(3)])
    await h.expect(["first 0", "first 1", "first 2"])
    await h.stop()
    journal_write(jdir, [{"MESSAGE": "old", "_COMM": "x"}])
    h2 = Harness(tmp_path, [], log_journal=True, journal_dir=str(jdir))  # no saved cursor
    await h2.start()
    journal_write(jdir, [{"MESSAGE": f"new {i}", "_COMM": "x"} for i in range(3)])
    await h2.expect(["new 0", "new 1", "new 2"])
    await h2.stop()


@needs_journal
async def test_journal_cursor_of_a_vacuumed_entry_resumes_at_the_next_one(tmp_path):
    jdir = tmp_path / "journal"
    jdir.mkdir()
    journal_write(jdir, [{"MESSAGE": "old", "_COMM": "x"}])
    h = Harness(tmp_path, [], log_journal=True, journal_dir=str(jdir))
    await h.start()
    journal_write(jdir, [{"MESSAGE": "shipped", "_COMM": "x"}])
    await h.expect(["shipped"])
    await h.stop()
    (jdir / "remote.journal").rename(tmp_path / "vacuumed.journal")  # the cursor's entry is gone
    journal_write(jdir, [{"MESSAGE": f"later {i}", "_COMM": "x"} for i in range(2)])
    h2 = Harness(tmp_path, [], log_journal=True, journal_dir=str(jdir))
    h2.positions = dict(h.positions)
    await h2.start()
    await h2.expect(["later 0", "later 1"])  # the first entry after the cursor included
    await h2.stop()


@needs_journal
async def test_journal_binary_and_huge_messages_are_cut_not_lost(tmp_path):
    jdir = tmp_path / "journal"
    jdir.mkdir()
    journal_write(jdir, [{"MESSAGE": "before", "_COMM": "x"}])
    h = Harness(tmp_path, [], log_journal=True, journal_dir=str(jdir), log_max_rate=0)
    await h.start()
    huge = "y" * (logsmod.MAX_MESSAGE * 5)  # over the data threshold too
    journal_write(jdir, [{"MESSAGE": b"caf\xc3\xa9 \xff\x00end", "_COMM": "x"},
                         {"MESSAGE": huge, "_COMM": "x"}, {"MESSAGE": "after", "_COMM": "x"}])
    await async_wait_for(lambda: len(h.logs) >= 3, 15, what="three entries")
    await asyncio.sleep(0.2)
    binary, cut, after = h.logs
    assert binary.message == "caf\u00e9 \ufffd\x00end" and binary.program == "x"
    assert cut.message == "y" * logsmod.MAX_MESSAGE
    assert after.message == "after" and h.col.stats["shed"] == 0
    await h.stop()


@needs_journal
async def test_without_libsystemd_the_syslog_files_are_followed(tmp_path, monkeypatch):
    jdir = tmp_path / "journal"
    jdir.mkdir()
    journal_write(jdir, [{"MESSAGE": "in the journal", "_COMM": "x"}])
    monkeypatch.setattr(logsmod.journal, "LIBRARY", "libsystemd-not-here.so.0")  # a real dlopen failure
    monkeypatch.setattr(logsmod.journal, "_lib", None)
    flags = {"state_dir": tmp_path, "log_journal": True, "journal_dir": str(jdir)}
    monkeypatch.setattr(logsmod, "SYSLOG_FILES", (str(tmp_path / "no-syslog"),))
    reason = LogsCollector.unavailable(load(AGENT_OPTS, flags, None, env={}))
    assert reason and "libsystemd-not-here.so.0 cannot be loaded" in reason
    syslog = tmp_path / "syslog"
    syslog.write_text("")
    monkeypatch.setattr(logsmod, "SYSLOG_FILES", (str(syslog),))
    assert LogsCollector.unavailable(load(AGENT_OPTS, flags, None, env={})) is None
    h = Harness(tmp_path, [], log_journal=True, journal_dir=str(jdir))
    await h.start()
    assert not h.col.use_journal and h.col.files == [str(syslog)]
    append(syslog, line(1))
    await h.expect(["message 1"])
    await h.stop()


# --- the real agent ---------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1])
    return 0


def agent_pids(proc) -> int:
    return proc.p.pid


def shipped(h, source: str) -> list[str]:
    return [r[0] for r in h.query(
        "SELECT json_extract(data, '$.message') FROM events_full WHERE kind = 'log' AND json_extract(data, '$.source') = ?"
        " ORDER BY seq", (source,))]


def test_real_agent_restart_ships_each_line_once(tmp_path, hub_process, agent_process):
    hub = hub_process().start()
    state = tmp_path / "agent"
    join_agent(hub.url, hub.enroll("n1"), state)
    f = tmp_path / "app.log"
    f.write_text("old history\n")
    a = agent_process(state, "--collectors", "logs", "--log-file", str(f))
    time.sleep(1.5)
    append(f, line(1))
    wait_for(lambda: shipped(hub, str(f)) == ["message 1"], 30, what="line 1 at the hub")
    assert a.terminate() == 0
    append(f, line(2))
    os.rename(f, str(f) + ".1")
    f.write_text(line(3))
    agent_process(state, "--collectors", "logs", "--log-file", str(f))
    wait_for(lambda: shipped(hub, str(f)) == ["message 1", "message 2", "message 3"], 30,
             what="lines written while stopped, once each")


@needs_journal
def test_real_agent_kill9_at_any_moment_ships_each_journal_line_once(tmp_path, hub_process, agent_process):
    """A journal written without pause; the agent killed with SIGKILL six times, at moments
    spread over its spooling and shipping (never waiting for a save): every line reaches the
    hub exactly once."""
    hub = hub_process().start()
    state = tmp_path / "agent"
    join_agent(hub.url, hub.enroll("n1"), state)
    jdir = tmp_path / "journal"
    jdir.mkdir()
    journal_write(jdir, [{"MESSAGE": "before the agent", "_COMM": "x"}])
    env = {"HOMELAB_AGENT_JOURNAL_DIR": str(jdir), "HOMELAB_AGENT_SHIP_LINGER": "0"}
    agent = agent_process(state, "--collectors", "logs", env=env)

    def journald(prefix: str) -> list[str]:
        return [m for m in shipped(hub, "journald") if m.startswith(prefix)]

    ready = iter(range(1000))  # the first start follows from the end: wait until it follows
    wait_for(lambda: journal_write(jdir, [{"MESSAGE": f"ready {next(ready)}", "_COMM": "x"}])
             or journald("ready"), 30, interval=0.5, what="the agent following the journal")

    written: list[str] = []
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            batch = [f"line {len(written) + i}" for i in range(5)]
            journal_write(jdir, [{"MESSAGE": m, "_COMM": "x"} for m in batch])
            written.extend(batch)

    t = threading.Thread(target=writer)
    t.start()
    try:
        for delay in (0.05, 0.35, 0.8, 1.3, 1.9, 2.6):  # spread over the old one-second save
            n = len(journald("line"))
            # wait until this agent has shipped some lines, then kill it a moment later
            wait_for(lambda n=n: len(journald("line")) > n, 30, what="lines shipped by this agent")
            time.sleep(delay)  # the moment of the kill is the variable under test
            agent.kill()
            agent = agent_process(state, "--collectors", "logs", env=env)
    finally:
        stop.set()
        t.join(30)
    wait_for(lambda: len(journald("line")) >= len(written), 60,
             what=f"{len(written)} lines at the hub (have {len(journald('line'))})")
    time.sleep(1.0)  # and no more arrive
    got = journald("line")
    dup = sorted({m for m in got if got.count(m) > 1})
    assert not dup, f"{len(dup)} lines shipped twice: {dup[:10]}"
    assert sorted(got) == sorted(written)


@pytest.mark.slow
def test_flood_keeps_agent_memory_bounded(tmp_path, hub_process, agent_process):
    """>= 50,000 lines/s for several seconds: the agent's memory stays flat, shedding is counted."""
    hub = hub_process().start()
    state = tmp_path / "agent"
    join_agent(hub.url, hub.enroll("n1"), state)
    f = tmp_path / "flood.log"
    f.write_text("")
    agent = agent_process(state, "--collectors", "logs", "--log-file", str(f))
    time.sleep(2.0)
    base = rss_kib(agent_pids(agent))
    writer = subprocess.Popen([sys.executable, "-c", f"""
import time, sys
line = (b"Nov 25 10:00:00 host1 flood[1]: " + b"x" * 150 + b"\\n")
n, t0 = 0, time.monotonic()
with open({str(f)!r}, "ab", buffering=1 << 20) as w:
    while time.monotonic() - t0 < 6:
        w.write(line * 5000)
        w.flush()
        n += 5000
        time.sleep(0.045)
print(n / (time.monotonic() - t0))
"""], stdout=subprocess.PIPE, text=True)
    peak = base
    while writer.poll() is None:
        peak = max(peak, rss_kib(agent_pids(agent)))
        time.sleep(0.1)
    out, _ = writer.communicate(timeout=30)
    rate = float(out.strip())
    assert rate >= 50_000, f"the writer only managed {rate:.0f} lines/s"
    written = f.stat().st_size
    for _ in range(30):
        peak = max(peak, rss_kib(agent_pids(agent)))
        time.sleep(0.1)
    assert agent.alive()
    # The file grew by twice the bound at least; the agent's memory did not follow it.
    assert written > 64 * 1024 * 1024
    assert peak - base < 32 * 1024, f"RSS grew from {base} KiB to {peak} KiB while {written} bytes were written"
    print(f"flood: {rate:.0f} lines/s, {written >> 20} MiB written; agent RSS {base} -> peak {peak} KiB")
    wait_for(lambda: hub.query("SELECT 1 FROM events WHERE kind = 'notice' AND data LIKE '%shed%log lines%'"),
             60, what="a counted shed notice")
