"""Top processes by CPU and by memory, every ``processes_interval`` (default 60 s).

This is where Python monitors spend their CPU (psutil.process_iter with many attributes
builds an object and opens several files per process). Here each sample reads one file per
process, ``/proc/PID/stat``, which holds the name, CPU ticks, start time and RSS; the
owner and command line are read only for the handful of processes that make the top list.
``python -m bench processes`` measures this against psutil on the same machine.

CPU percent is over the interval between samples, per core as ``top`` shows it (a process
using two cores fully is 200%). A process's start time is kept with its ticks so a reused
PID is never credited with the previous owner's CPU time. Command lines are redacted on the
node (``agent.redact``, the rules used for shell commands) before they are sent.
"""

from __future__ import annotations

import asyncio
import os
import time

from agent import wire
from agent.collectors import Collector
from agent.redact import redact
from agent.users import user_name

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
CMDLINE_MAX = 512


def read_stat(pid: str) -> tuple[str, int, int, int] | None:
    """(name, utime+stime ticks, start time ticks, rss bytes) or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The name is in parentheses and may itself contain spaces and ')'.
    lp, rp = data.find(b"("), data.rfind(b")")
    if lp < 0 or rp < 0:
        return None
    rest = data[rp + 2:].split()
    # rest[0] is field 3 (state): utime=14, stime=15, starttime=22, rss=24 (1-based)
    try:
        return (data[lp + 1:rp].decode(errors="replace"), int(rest[11]) + int(rest[12]),
                int(rest[19]), int(rest[21]) * PAGE)
    except (IndexError, ValueError):
        return None


class ProcSampler:
    """Keeps the previous sample's ticks; ``sample()`` returns the current top list."""

    def __init__(self, top: int):
        self.top = top
        self.prev: dict[str, tuple[int, int]] = {}  # pid -> (starttime, ticks)
        self.prev_t: float | None = None


    def sample(self) -> list[wire.Proc]:
        now = time.monotonic()
        dt = (now - self.prev_t) if self.prev_t is not None else None
        cur: dict[str, tuple[int, int]] = {}
        rows = []  # (cpu, rss, pid, name)
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            st = read_stat(pid)
            if st is None:
                continue
            name, ticks, start, rss = st
            cur[pid] = (start, ticks)
            cpu = 0.0
            if dt:
                old = self.prev.get(pid)
                # a process born since the last sample: all of its ticks fall in the interval
                base = old[1] if old and old[0] == start else 0
                cpu = max(0, ticks - base) / CLK_TCK / dt * 100
            rows.append((cpu, rss, pid, name))
        self.prev, self.prev_t = cur, now
        by_cpu = sorted(rows, key=lambda r: (-r[0], -r[1]))[: self.top] if dt else []
        by_mem = sorted(rows, key=lambda r: -r[1])[: self.top]
        chosen = {r[2]: r for r in (*by_cpu, *by_mem)}
        out = []
        for cpu, rss, pid, name in sorted(chosen.values(), key=lambda r: (-r[0], -r[1])):
            try:
                uid = os.stat(f"/proc/{pid}").st_uid
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read(CMDLINE_MAX * 4)
            except OSError:
                continue  # exited since: not worth reporting
            # Command lines carry passwords and tokens as often as shell history does.
            cmdline, _ = redact(cmd.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace"))
            cmdline = cmdline[:CMDLINE_MAX]
            out.append(wire.Proc(pid=int(pid), name=name, user=user_name(uid),
                                 cpu_percent=round(cpu, 1), rss=rss, cmdline=cmdline))
        return out


class PsutilSampler:
    """The conventional way, kept for ``bench processes`` to compare against."""

    def __init__(self, top: int):
        import psutil

        self.psutil, self.top = psutil, top

    def sample(self) -> list[wire.Proc]:
        rows = []
        for p in self.psutil.process_iter(["pid", "name", "username", "cpu_percent", "memory_info", "cmdline"]):
            i = p.info
            rss = i["memory_info"].rss if i["memory_info"] else 0
            rows.append((i["cpu_percent"] or 0.0, rss, i))
        by_cpu = sorted(rows, key=lambda r: -r[0])[: self.top]
        by_mem = sorted(rows, key=lambda r: -r[1])[: self.top]
        chosen = {r[2]["pid"]: r for r in (*by_cpu, *by_mem)}
        return [wire.Proc(pid=i["pid"], name=i["name"] or "", user=i["username"] or "",
                          cpu_percent=round(cpu, 1), rss=rss, cmdline=redact(" ".join(i["cmdline"] or []))[0][:CMDLINE_MAX])
                for cpu, rss, i in sorted(chosen.values(), key=lambda r: (-r[0], -r[1]))]


class ProcessesCollector(Collector):
    name = "processes"

    def __init__(self, settings, emit, state):
        super().__init__(settings, emit, state)
        if settings.processes_interval < 1:
            raise ValueError(f"processes_interval must be at least 1s, got {settings.processes_interval}")
        if not 1 <= settings.processes_top <= 100:
            raise ValueError(f"processes_top must be between 1 and 100, got {settings.processes_top}")
        self.interval = settings.processes_interval
        self.sampler = ProcSampler(settings.processes_top)

    @classmethod
    def unavailable(cls, settings) -> str | None:
        return None if os.path.exists("/proc/self/stat") else "no /proc filesystem"

    async def run(self) -> None:
        self.sampler.sample()  # the baseline CPU times
        while True:
            await asyncio.sleep(self.interval)
            self.emit(wire.Processes(ts=time.time(), top=self.sampler.sample()))
