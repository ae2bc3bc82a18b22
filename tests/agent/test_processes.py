"""Processes collector against real processes: a CPU burner and a memory holder."""

from __future__ import annotations

import asyncio
import getpass
import os
import subprocess
import sys
import time

import pytest

from agent import wire
from agent.collectors.processes import ProcessesCollector, ProcSampler, PsutilSampler, read_stat
from agent.config import AGENT_OPTS
from agent.settings import load
from agent.state import State

BURN = "import time\nend = time.time() + 20\nwhile time.time() < end: pass\n"
HOLD = "import sys, time\nx = bytearray(160 * 1024 * 1024)\nx[::4096] = b'x' * len(x[::4096])\nprint('ready', flush=True)\ntime.sleep(20)\n"


@pytest.fixture
def children():
    made = []

    def start(code, *args):
        p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE)
        made.append(p)
        return p

    yield start
    for p in made:
        p.kill()
        p.wait()
        p.stdout.close()


def test_read_stat_handles_odd_names(tmp_path):
    # A process name with spaces and parentheses must not shift the fields.
    exe = tmp_path / "a (b) c"
    os.symlink("/bin/sleep", exe)
    p = subprocess.Popen([str(exe), "10"])
    try:
        deadline = time.monotonic() + 5
        while (st := read_stat(str(p.pid)))[3] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # just exec'd: no pages mapped yet
        name, ticks, start, rss = st
        assert name == "a (b) c" and ticks >= 0 and start > 0 and rss > 0
    finally:
        p.kill()
        p.wait()
    assert read_stat("999999999") is None


def test_burner_tops_cpu_and_holder_tops_memory(children):
    burner = children(BURN)
    holder = children(HOLD)
    assert holder.stdout.readline() == b"ready\n"
    s = ProcSampler(top=20)
    assert all(p.cpu_percent == 0 for p in s.sample())  # first sample: memory ranks only
    time.sleep(1.0)
    top = s.sample()
    by_pid = {p.pid: p for p in top}
    # The machine is shared with other work (two cores, benchmarks running): the burner
    # makes the top list with a real share of a core, not always first.
    assert burner.pid in by_pid and by_pid[burner.pid].cpu_percent > 10, top
    b = by_pid[burner.pid]
    assert b.cmdline.startswith(sys.executable) and b.user == getpass.getuser()
    assert holder.pid in by_pid and by_pid[holder.pid].rss >= 160 * 1024 * 1024
    assert by_pid[holder.pid].cpu_percent < 20
    assert len(top) <= 40
    # psutil agrees about who the burner is (the comparison bench measures cost, not results)
    ps = PsutilSampler(top=20)
    ps.sample()
    time.sleep(0.5)
    assert burner.pid in {p.pid for p in ps.sample()}


async def test_collector_emits_samples(tmp_path, children):
    burner = children(BURN)
    events = []
    state = State(tmp_path / "s.db")
    settings = load(AGENT_OPTS, {"processes_interval": 1, "processes_top": 20}, None, env={})
    c = ProcessesCollector(settings, lambda e: events.append(e) or True, state)
    task = asyncio.create_task(c.run())
    try:
        deadline = time.monotonic() + 10
        while len(events) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(events) >= 2
        ev = events[-1]
        assert isinstance(ev, wire.Processes) and 1 <= len(ev.top) <= 40
        assert any(p.pid == burner.pid and p.cpu_percent > 10 for p in ev.top), ev.top
        wire.encode_event(ev)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        state.close()


@pytest.mark.parametrize("key,value", [("processes_interval", 0.5), ("processes_top", 0), ("processes_top", 500)])
def test_settings_validated(tmp_path, key, value):
    state = State(tmp_path / "s.db")
    settings = load(AGENT_OPTS, {key: value}, None, env={})
    with pytest.raises(ValueError, match=key):
        ProcessesCollector(settings, lambda e: True, state)
    state.close()


def test_secrets_in_command_lines_are_redacted(children):
    secret = "s3cr3t-" + "x" * 12
    holder = children(HOLD, f"--password={secret}", "https://bob:hunter2@example.invalid/x")
    assert holder.stdout.readline() == b"ready\n"
    top = ProcSampler(top=5).sample()
    mine = next(p for p in top if p.pid == holder.pid)  # top by memory
    assert secret not in mine.cmdline and "hunter2" not in mine.cmdline
    assert "--password=" in mine.cmdline and "example.invalid" in mine.cmdline
