"""systemd services: each unit's active state, sub-state, result and restart count; an event
when one of them changes (a unit failed, recovered, was restarted by systemd).

Every ``services_interval`` one ``systemctl list-units`` gives each unit's name, active state
and sub-state (about 4 ms of CPU on a booted Debian node). ``systemctl show`` (result, restart
count, enabled) runs only for the units that moved: the first poll shows them all; later a
unit is shown again when its listed state differs from the last poll, or when systemd started
or stopped it since. Starts and stops are seen with inotify on ``/run/systemd/units``: systemd
writes ``invocation:UNIT`` there (a symlink to the new invocation ID) at every start and
removes it when the unit goes inactive or fails. So a service that crashed and was restarted by
``Restart=`` between two polls, or a failed unit that ran again and failed another way, is
shown though its listed state is the same at both. Showing every unit every poll cost ~36 ms
of CPU for 68 units there, more than the rest of the agent together. Where that directory or
inotify is not available, or the inotify queue overflowed, the poll shows every unit, as
before. Polling (not a D-Bus signal subscription) keeps the agent free of a D-Bus library.

Most polls run no ``systemctl`` at all: once two polls agree and no unit is in a transient
state (activating, deactivating, reloading), a poll with no start or stop under
``/run/systemd/units`` since the last one is skipped; a start or stop, or RESYNC seconds
since the last full look, brings the full poll back (and the polls after it run until the
units settle again). A change that no start or stop announces (a unit that went from
active/running to active/exited long after it started) is seen within RESYNC seconds.

Where systemd is not the init system (containers, this project's CI, non-systemd distros)
the collector steps aside: ``/run/systemd/system`` is the test sd_booted(3) documents.
The last states seen are kept in ``state.db``, so an agent restart does not report every
unit again; the very first poll reports each unit once as a baseline (``previous`` unset).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time

from inotify_simple import INotify
from inotify_simple import flags as F

from agent import proc, wire
from agent.collectors import Collector

log = logging.getLogger(__name__)

PROPS = ("Id", "ActiveState", "SubState", "Result", "NRestarts", "UnitFileState")
STATE_KEY = "services.last"
MAX_UNITS = 5000
TIMEOUT = 30.0
UNITS_DIR = "/run/systemd/units"  # systemd's invocation:UNIT links
RESYNC = 120.0  # seconds: a quiet node still lists its units this often
# states a unit passes through on its own, with no start or stop to say it arrived
TRANSIENT = frozenset({"activating", "deactivating", "reloading", "refreshing"})


def parse_show(text: str) -> list[dict[str, str]]:
    """Parse ``systemctl show -p A,B unit1 unit2 ...``: KEY=VALUE lines, units separated by
    an empty line. Values may contain '='; only the first one splits."""
    units: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in text.split("\n"):  # not splitlines(): values may hold \x85 or \u2028
        if not line.strip():
            if cur:
                units.append(cur)
                cur = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            cur[key] = value
    if cur:
        units.append(cur)
    return units


def parse_list_units(text: str) -> dict[str, tuple[str | None, str | None]]:
    """{unit: (active, sub)} from ``systemctl list-units --plain --no-legend`` (columns UNIT
    LOAD ACTIVE SUB DESCRIPTION); a leading status glyph (a failed unit's bullet) is skipped."""
    units: dict[str, tuple[str | None, str | None]] = {}
    for line in text.splitlines():
        words = line.split()
        for i, word in enumerate(words):
            if "." in word:  # the first word that looks like a unit name
                rest = words[i + 2:i + 4]
                units[word] = (rest[0] if rest else None, rest[1] if len(rest) > 1 else None)
                break
    return units


class Starts:
    """Units systemd started or stopped since the last ``take()``, from inotify on its
    ``invocation:UNIT`` links; None from ``take()`` when that cannot be known (no directory,
    no inotify, a full event queue): then every unit must be shown."""

    MASK = F.CREATE | F.MOVED_TO | F.DELETE | F.MOVED_FROM

    def __init__(self, units_dir: str):
        self.units_dir = units_dir
        self.ino: INotify | None = None

    def take(self) -> set[str] | None:
        if self.ino is None:
            try:
                ino = INotify(nonblocking=True)
            except OSError:
                return None
            try:
                ino.add_watch(self.units_dir, self.MASK)
            except OSError:
                ino.close()
                return None
            self.ino = ino
            return None  # what happened before the watch is unknown
        try:
            events = self.ino.read(timeout=0)
        except OSError:
            self.close()
            return None
        names: set[str] = set()
        for ev in events:
            if ev.mask & (F.Q_OVERFLOW | F.IGNORED):  # events lost, or the directory is gone
                self.close()
                return None
            if ev.name.startswith("invocation:"):
                names.add(ev.name[len("invocation:"):])
        return names

    def close(self) -> None:
        if self.ino is not None:
            self.ino.close()
            self.ino = None


def unit_state(props: dict[str, str]) -> tuple | None:
    """(active, sub, result, restarts, enabled) or None for a unit systemd does not know."""
    active = props.get("ActiveState")
    if not props.get("Id") or not active:
        return None
    try:
        restarts = int(props["NRestarts"]) if props.get("NRestarts") else None
    except ValueError:
        restarts = None
    return (active, props.get("SubState") or None, props.get("Result") or None, restarts,
            props.get("UnitFileState") or None)


def changes(last: dict[str, list], now: dict[str, tuple], ts: float, baseline: bool) -> list[wire.Service]:
    """Service events for units whose state, result or restart count moved since ``last``.
    A unit that disappeared (unit file removed and daemon reloaded) is reported inactive."""
    out = []
    for unit, st in sorted(now.items()):
        old = last.get(unit)
        if old is not None and tuple(old[:4]) == st[:4]:
            continue
        previous: str | None
        if old is None and not baseline:
            previous = "inactive"  # a unit that appeared since: it was not there, now it is
        else:
            previous = old[0] if old is not None else None
        out.append(wire.Service(ts=ts, unit=unit, active=st[0], sub=st[1], result=st[2],
                                restarts=st[3], enabled=st[4], previous=previous))
    for unit in sorted(set(last) - set(now)):
        if last[unit][0] != "inactive":
            out.append(wire.Service(ts=ts, unit=unit, active="inactive", sub="dead",
                                    previous=last[unit][0]))
    return out


async def _run(*argv: str) -> str:
    return await proc.run(*argv, timeout=TIMEOUT, env={"SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"})


class ServicesCollector(Collector):
    name = "services"

    def __init__(self, settings, emit, state):
        super().__init__(settings, emit, state)
        if settings.services_interval < 1:
            raise ValueError(f"services_interval must be at least 1s, got {settings.services_interval}")
        self.interval = settings.services_interval
        self.seen: dict[str, tuple] | None = None  # the last poll's states (None: none yet)
        self.starts = Starts(UNITS_DIR)
        self.carry: set[str] | None = set()  # starts quiet() took for the next poll (None: unknown)
        self.settled = False  # the last two polls agreed and no unit was on its way anywhere
        self.listed_at = 0.0  # monotonic time of the last poll

    @classmethod
    def unavailable(cls, settings) -> str | None:
        if not os.path.isdir("/run/systemd/system"):
            return "systemd is not the init system here (no /run/systemd/system)"
        if not shutil.which("systemctl"):
            return "systemctl not found"
        return None

    def quiet(self) -> bool:
        """True when this poll may be skipped: the units settled at the last poll, systemd
        has started or stopped none since, and the last full look is recent. What a start
        or stop does not announce (a unit that became active/exited on its own long after
        it started, a failed unit cleared by ``reset-failed``) waits for the next full look, at most
        RESYNC seconds."""
        if not self.settled or time.monotonic() - self.listed_at >= RESYNC:
            return False
        started = self.starts.take()
        if started == set():
            return True
        # kept for poll(): list-units may show the same state after a quick restart
        self.carry = None if started is None or self.carry is None else self.carry | started
        return False

    async def poll(self) -> dict[str, tuple]:
        self.listed_at = time.monotonic()
        self.settled = False  # until this poll completes: a failed one is not skipped next time
        listing = parse_list_units(await _run("systemctl", "list-units", "--type=service", "--all",
                                              "--plain", "--no-legend", "--no-pager"))
        names = list(listing)[:MAX_UNITS]
        taken = self.starts.take()  # before show: a start during this poll is seen next time
        started = None if taken is None or self.carry is None else self.carry | taken
        self.carry = set()
        seen = self.seen
        out: dict[str, tuple] = {}
        if seen is None or started is None:
            moved = names
        else:
            moved = []
            for n in names:
                if n not in seen or seen[n][:2] != listing[n] or n in started:
                    moved.append(n)
                else:
                    out[n] = seen[n]
        if moved:
            try:
                shown = await _run("systemctl", "show", "--no-pager", "-p", ",".join(PROPS), "--", *moved)
            except BaseException:
                self.seen = None  # the starts taken above are gone: show all next time
                raise
            for props in parse_show(shown):
                st = unit_state(props)
                if st is not None:
                    out[props["Id"]] = st
        self.settled = out == seen and not any(st[0] in TRANSIENT for st in out.values())
        self.seen = out
        return out

    def step(self, now: dict[str, tuple]) -> int:
        last = self.state.get(STATE_KEY)
        events = changes(last or {}, now, time.time(), baseline=last is None)
        for ev in events:
            self.emit(ev)
        if events or last is None or last.keys() != now.keys():  # no write when nothing moved
            self.state.set(STATE_KEY, {u: list(s) for u, s in now.items()})
        return len(events)

    async def run(self) -> None:
        try:
            while True:
                try:
                    if not self.quiet():
                        self.step(await self.poll())
                except RuntimeError as e:  # systemd busy or restarting: try again next time
                    log.warning("services: %s", e)
                await asyncio.sleep(self.interval)
        finally:
            self.starts.close()
