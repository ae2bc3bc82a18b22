"""Packages: installs, upgrades, downgrades and removals as they happen, a full inventory at
start and after each burst of changes, and pending updates at a slow interval.

As they happen: the package manager's own log is followed (dpkg ``/var/log/dpkg.log``, dnf
``/var/log/dnf.rpm.log``, pacman ``/var/log/pacman.log``), from a position kept in
``state.db``, so what changed while the agent was stopped is reported at start, and log
rotation (``dpkg.log`` -> ``dpkg.log.1``) loses nothing. The first start does not replay old
history: the inventory says what is installed. inotify on the log's directory says when to
look (a quiet node used to stat the log every ``packages_poll``, 30 wakeups a minute for
nothing); during a burst of changes the log is read every ``packages_poll`` until it settles,
a look every BACKSTOP seconds covers a write inotify missed, and where the directory cannot
be watched the log is polled every ``packages_poll`` as before.

Inventory: ``dpkg-query -W`` with the manual/automatic flag from apt's
``/var/lib/apt/extended_states``; ``rpm -qa``; ``pacman -Q`` with ``pacman -Qqe`` (explicit).

Pending updates (apt only): ``apt-get -s upgrade`` simulates an upgrade against the package
lists already on disk. It changes nothing, downloads nothing and needs no network; how
fresh the answer is depends on whoever runs ``apt-get update`` (apt's own timer, usually).
An update is a security update when one of its origins is a security archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from datetime import datetime

import msgspec
from inotify_simple import INotify
from inotify_simple import flags as F

from agent import aio, proc, wire
from agent.collectors import Collector
from agent.redact import redact

log = logging.getLogger(__name__)

READ_MAX = 4 * 1024 * 1024  # per poll: a huge backlog is read over several polls
CMD_TIMEOUT = 300.0
HOLD_MAX = 1000  # changes held back for annotation at most
PENDING_START_DELAY = (300.0, 900.0)  # seconds after start before the first pending check
BACKSTOP = 60.0  # seconds between looks at a log inotify watches, should a write go unseen


# --- log parsing (one function per manager: line -> Package or None) ------------------

DPKG_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (install|upgrade|remove|purge) (\S+) (\S+) (\S+)$")
DPKG_ACTIONS: dict[str, wire.PackageAction] = {
    "install": "install", "upgrade": "upgrade", "remove": "remove", "purge": "purge"}


def _split_arch(pkg: str) -> tuple[str, str | None]:
    name, sep, arch = pkg.partition(":")
    return (name, arch) if sep else (pkg, None)


def _none(v: str) -> str | None:
    return None if v == "<none>" else v


def parse_dpkg(line: str) -> wire.Package | None:
    """``2026-11-25 17:19:40 upgrade bash:amd64 5.2-1 5.2-2`` (times are local)."""
    m = DPKG_RE.match(line)
    if not m:
        return None
    when, verb, pkg, old, new = m.groups()
    action = DPKG_ACTIONS[verb]
    name, arch = _split_arch(pkg)
    ts = time.mktime(time.strptime(when, "%Y-%m-%d %H:%M:%S"))
    old, new = _none(old), _none(new)
    if action in ("remove", "purge"):
        return wire.Package(ts=ts, action=action, manager="dpkg", name=name, arch=arch, old_version=old)
    if action == "install" and old is not None:
        action = "upgrade"  # dpkg says install when the old version was left as config files
    return wire.Package(ts=ts, action=action, manager="dpkg", name=name, arch=arch,
                        version=new, old_version=old if action == "upgrade" else None)


RPM_RE = re.compile(r"^(\S+) SUBDEBUG (Installed|Upgrade|Downgrade|Erase|Reinstall|Reinstalled|Obsoleted|Upgraded|Downgraded|Installing|Upgrading|Erased): (\S+)$")
RPM_ACTIONS: dict[str, wire.PackageAction] = {"Installed": "install", "Upgrade": "upgrade", "Downgrade": "downgrade", "Erase": "remove", "Reinstall": "upgrade"}


def _nevra(s: str) -> tuple[str, str, str | None]:
    """'bash-5.2.15-3.fc38.x86_64' -> ('bash', '5.2.15-3.fc38', 'x86_64')."""
    base, _, tail = s.rpartition(".")
    arch: str | None = tail
    if not base:
        base, arch = s, None
    parts = base.rsplit("-", 2)
    if len(parts) < 3:
        return base, "", arch
    return parts[0], f"{parts[1]}-{parts[2]}", arch


def _iso(s: str) -> float:
    s = s.strip("[]")
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s if len(s) < 6 or s[-5] not in "+-" else s[:-2] + ":" + s[-2:])
    except ValueError:
        return time.time()
    return dt.timestamp()


def parse_rpm(line: str) -> wire.Package | None:
    """``2023-10-01T10:00:00+0000 SUBDEBUG Upgrade: bash-5.2.21-1.fc39.x86_64`` (dnf.rpm.log).
    The old half of an upgrade (``Upgraded:``) carries nothing new and is skipped."""
    m = RPM_RE.match(line)
    if not m or m.group(2) not in RPM_ACTIONS:
        return None
    name, version, arch = _nevra(m.group(3))
    action = RPM_ACTIONS[m.group(2)]
    if action == "remove":
        return wire.Package(ts=_iso(m.group(1)), action=action, manager="rpm", name=name, arch=arch, old_version=version)
    return wire.Package(ts=_iso(m.group(1)), action=action, manager="rpm", name=name, arch=arch, version=version)


PACMAN_RE = re.compile(r"^\[([^\]]+)\] (?:\[ALPM\] )?(installed|upgraded|downgraded|removed|reinstalled) (\S+) \((.*)\)$")


def parse_pacman(line: str) -> wire.Package | None:
    """``[2024-01-01T10:00:00+0000] [ALPM] upgraded bash (5.2.015-1 -> 5.2.021-1)``."""
    m = PACMAN_RE.match(line)
    if not m:
        return None
    when, verb, name, versions = m.groups()
    old, _, new = versions.partition(" -> ")
    ts = _iso(when) if "T" in when else time.mktime(time.strptime(when, "%Y-%m-%d %H:%M"))
    if verb == "removed":
        return wire.Package(ts=ts, action="remove", manager="pacman", name=name, old_version=old)
    if verb in ("upgraded", "downgraded"):
        return wire.Package(ts=ts, action="upgrade" if verb == "upgraded" else "downgrade",
                            manager="pacman", name=name, version=new, old_version=old)
    return wire.Package(ts=ts, action="install" if verb == "installed" else "upgrade", manager="pacman", name=name, version=old)


# --- apt -------------------------------------------------------------------------------

APT_INST_RE = re.compile(r"^Inst (\S+) (?:\[([^\]]*)\] )?\((\S+) (.*?)(?: \[[^\]]*\])?\)")


def parse_apt_simulation(text: str) -> list[wire.PendingUpdate]:
    """``Inst libgcrypt20 [1.10.1-3] (1.10.1-3+deb12u1 Debian:12.5/stable, Debian-Security:12/stable-security [amd64])``."""
    out = []
    for line in text.splitlines():
        m = APT_INST_RE.match(line)
        if m:
            name, current, candidate, origins = m.groups()
            out.append(wire.PendingUpdate(name=name, current=current or "", candidate=candidate,
                                          security="security" in origins.lower()))
    return out


def parse_extended_states(text: str) -> set[tuple[str, str]]:
    """(package, arch) pairs apt installed automatically (as dependencies)."""
    auto, pkg, arch, flag = set(), None, "", False
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if pkg and flag:
                auto.add((pkg, arch))
            pkg, arch, flag = None, "", False
            continue
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "Package":
            pkg = value
        elif key == "Architecture":
            arch = value
        elif key == "Auto-Installed":
            flag = value == "1"
    return auto


class AptHistory:
    """Who asked for a change and with which command: apt's ``/var/log/apt/history.log``
    blocks (``Start-Date``, ``Commandline``, ``Requested-By`` when run through sudo, ...,
    ``End-Date``). A dpkg change made between a block's start and end belongs to it; a
    block without ``Requested-By`` was run by root itself. dpkg run directly leaves no block,
    and its changes have no user."""

    path = "/var/log/apt/history.log"
    KEEP = 50  # recent blocks remembered; older changes are long reported

    def __init__(self, state):
        self.tail = LogTail(self.path, state, "packages.apt.history")
        self.blocks: list[dict] = []

    @staticmethod
    def _when(value: str) -> float | None:
        try:
            return time.mktime(time.strptime(" ".join(value.split()), "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            return None

    def feed(self, lines: list[str]) -> None:
        for line in lines:
            key, _, value = line.partition(": ")
            if key == "Start-Date":
                self.blocks.append({"start": self._when(value), "end": None, "command": None, "user": "root"})
                del self.blocks[: -self.KEEP]
            elif not self.blocks:
                continue
            elif key == "Commandline":
                redacted, _ = redact(value.strip())
                self.blocks[-1]["command"] = redacted[:4096]
            elif key == "Requested-By":
                self.blocks[-1]["user"] = value.split(" (")[0].strip()[:256] or None
            elif key == "End-Date":
                self.blocks[-1]["end"] = self._when(value)

    def start(self) -> None:
        if self.tail.start():
            self.feed(self.tail.read())

    def refresh(self) -> None:
        self.feed(self.tail.read())

    def who(self, ts: float) -> tuple[str | None, str | None]:
        for b in reversed(self.blocks):
            if b["start"] is not None and b["start"] <= ts and (b["end"] is None or ts <= b["end"]):
                return b["user"], b["command"]
        return None, None


async def run_cmd(*argv: str, ok: tuple[int, ...] = (0,)) -> str:
    return await proc.run(*argv, timeout=CMD_TIMEOUT, ok=ok, env={"DEBIAN_FRONTEND": "noninteractive"})


# --- managers ----------------------------------------------------------------------------


class Manager:
    name = ""
    log_path = ""
    parse: Callable[[str], wire.Package | None] = staticmethod(lambda line: None)

    @classmethod
    def present(cls) -> bool:
        raise NotImplementedError

    async def inventory(self) -> list[wire.PackageInfo]:
        raise NotImplementedError

    async def pending(self) -> list[wire.PendingUpdate] | None:
        return None  # not supported for this manager


class Dpkg(Manager):
    name, log_path, parse = "dpkg", "/var/log/dpkg.log", staticmethod(parse_dpkg)
    extended_states = "/var/lib/apt/extended_states"

    @classmethod
    def present(cls) -> bool:
        return bool(shutil.which("dpkg-query")) and os.path.exists("/var/lib/dpkg/status")

    async def inventory(self) -> list[wire.PackageInfo]:
        out = await run_cmd("dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Architecture}\t${db:Status-Abbrev}\n")
        try:
            with open(self.extended_states) as fh:
                auto = parse_extended_states(fh.read())
        except OSError:
            auto = set()  # no apt: everything was installed by hand
        pkgs = []
        for line in out.splitlines():
            f = line.split("\t")
            # Status-Abbrev: desired, current (i = installed; W/t = awaiting triggers)
            if len(f) == 4 and len(f[3]) >= 2 and f[3][1] in "iWt":
                pkgs.append(wire.PackageInfo(name=f[0], version=f[1], arch=f[2],
                                             manual=(f[0], f[2]) not in auto and (f[0], "") not in auto))
        return pkgs

    async def pending(self) -> list[wire.PendingUpdate] | None:
        if not shutil.which("apt-get"):
            return None
        nice = ("nice", "-n", "19") if shutil.which("nice") else ()
        return parse_apt_simulation(await run_cmd(*nice, "apt-get", "-s", "-q", "upgrade"))

    @staticmethod
    async def downgraded(old: str, new: str) -> bool:
        try:
            await run_cmd("dpkg", "--compare-versions", old, "gt", new)
            return True
        except RuntimeError:
            return False


class Rpm(Manager):
    name, log_path, parse = "rpm", "/var/log/dnf.rpm.log", staticmethod(parse_rpm)

    @classmethod
    def present(cls) -> bool:
        return bool(shutil.which("rpm")) and os.path.isdir("/var/lib/rpm") and not Dpkg.present()

    async def inventory(self) -> list[wire.PackageInfo]:
        out = await run_cmd("rpm", "-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n")
        return [wire.PackageInfo(name=f[0], version=f[1], arch=f[2]) for f in
                (line.split("\t") for line in out.splitlines()) if len(f) == 3]


class Pacman(Manager):
    name, log_path, parse = "pacman", "/var/log/pacman.log", staticmethod(parse_pacman)

    @classmethod
    def present(cls) -> bool:
        return bool(shutil.which("pacman")) and os.path.isdir("/var/lib/pacman")

    async def inventory(self) -> list[wire.PackageInfo]:
        explicit = set((await run_cmd("pacman", "-Qqe", ok=(0, 1))).split())
        out = await run_cmd("pacman", "-Q")
        return [wire.PackageInfo(name=f[0], version=f[1], manual=f[0] in explicit)
                for f in (line.split() for line in out.splitlines()) if len(f) == 2]


MANAGERS: tuple[type[Manager], ...] = (Dpkg, Rpm, Pacman)


# --- log following ---------------------------------------------------------------------


class LogTail:
    """New complete lines of a log, from a position saved in the agent's state.

    Rotation: the saved inode is looked for in ``PATH.1`` and the rest of that file read
    before the new one. Truncation (size below the position): start again from 0.
    With ``autocommit=False`` the position is saved only by ``commit()``, once what was
    read has been handed on: a crash in between re-reads rather than loses."""

    def __init__(self, path: str, state, key: str, autocommit: bool = True):
        self.path, self.state, self.key, self.autocommit = path, state, key, autocommit
        self.cur: dict | None = state.get(key)

    def _stat(self, path: str):
        try:
            return os.stat(path)
        except OSError:
            return None

    def start(self) -> bool:
        """On the very first run, skip history. Returns True when a position existed."""
        if self.cur is not None:
            return True
        st = self._stat(self.path)
        self.cur = {"ino": st.st_ino if st else None, "pos": st.st_size if st else 0}
        self.state.set(self.key, self.cur)
        return False

    def commit(self) -> None:
        if self.cur is not None and self.cur != self.state.get(self.key):
            self.state.set(self.key, self.cur)

    def _read(self, path: str, pos: int) -> tuple[list[str], int]:
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read(READ_MAX)
        except OSError:
            return [], pos
        end = data.rfind(b"\n")
        if end < 0:
            return [], pos  # a half-written line: wait for its end
        chunk = data[: end + 1]
        return chunk.decode(errors="replace").splitlines(), pos + len(chunk)

    def read(self) -> list[str]:
        cur = self.cur or {"ino": None, "pos": 0}
        st = self._stat(self.path)
        if st is None:
            return []
        lines: list[str] = []
        pos = cur["pos"]
        if cur["ino"] is not None and cur["ino"] != st.st_ino:
            old = self._stat(self.path + ".1")
            if old is not None and old.st_ino == cur["ino"]:
                lines, _ = self._read(self.path + ".1", pos)
            pos = 0
        elif st.st_size < pos:
            pos = 0
        if st.st_size > pos:
            new, pos = self._read(self.path, pos)
            lines += new
        if pos != cur["pos"] or st.st_ino != cur["ino"]:
            self.cur = {"ino": st.st_ino, "pos": pos}
            if self.autocommit:
                self.commit()
        return lines


# --- the collector -----------------------------------------------------------------------


class PackagesCollector(Collector):
    name = "packages"

    def __init__(self, settings, emit, state):
        super().__init__(settings, emit, state)
        if settings.packages_poll < 0.1:
            raise ValueError(f"packages_poll must be at least 0.1s, got {settings.packages_poll}")
        if settings.packages_settle < 0:
            raise ValueError(f"packages_settle must not be negative, got {settings.packages_settle}")
        if settings.pending_updates_interval and settings.pending_updates_interval < 60:
            raise ValueError(f"pending_updates_interval must be 0 (off) or at least 60s, got {settings.pending_updates_interval}")
        self.managers = [m() for m in MANAGERS if m.present()]
        self.tails = {m.name: LogTail(m.log_path, state, f"packages.{m.name}.log", autocommit=False)
                      for m in self.managers}
        self.pending_wanted = asyncio.Event()
        self.held: dict[str, list[wire.Package]] = {}
        self.apt = AptHistory(state) if any(isinstance(m, Dpkg) for m in self.managers) else None
        self.ino: INotify | None = None
        self.log_watches: set[int] = set()  # inotify's descriptors of the logs' own watches
        self.names: set[str] = set()
        self.written = asyncio.Event()  # a package log was written since the last look

    @classmethod
    def unavailable(cls, settings) -> str | None:
        if not any(m.present() for m in MANAGERS):
            return "no supported package manager (dpkg, rpm, pacman) found"
        return None

    async def follow(self, m: Manager) -> int:
        """Read new log lines. Returns how many packages changed. Changes are held until the
        burst settles (apt writes who asked for them when it finishes), or HOLD_MAX of them."""
        n = 0
        held = self.held.setdefault(m.name, [])
        for line in self.tails[m.name].read():
            ev = m.parse(line)
            if ev is None:
                continue
            if (isinstance(m, Dpkg) and ev.action == "upgrade" and ev.old_version and ev.version
                    and ev.old_version != ev.version and await m.downgraded(ev.old_version, ev.version)):
                ev = msgspec.structs.replace(ev, action="downgrade")
            held.append(ev)
            n += 1
            if len(held) >= HOLD_MAX:
                self.release(m)
                held = self.held[m.name]
        return n

    def release(self, m: Manager) -> None:
        held, self.held[m.name] = self.held.get(m.name, []), []
        if held and self.apt is not None and isinstance(m, Dpkg):
            self.apt.refresh()
        for ev in held:
            if self.apt is not None and isinstance(m, Dpkg):
                user, command = self.apt.who(ev.ts)
                if user or command:
                    ev = msgspec.structs.replace(ev, user=user, command=command)
            self.emit(ev)
        self.tails[m.name].commit()

    async def snapshot(self, m: Manager) -> None:
        try:
            pkgs = await m.inventory()
        except RuntimeError as e:  # dpkg locked mid-upgrade and the like: next time
            log.warning("packages: %s inventory failed: %s", m.name, e)
            return
        self.emit(wire.PackageInventory(ts=time.time(), manager=m.name, packages=pkgs))

    async def check_pending(self) -> None:
        for m in self.managers:
            try:
                updates = await m.pending()
            except RuntimeError as e:
                log.warning("packages: pending updates check failed: %s", e)
                continue
            if updates is not None:
                self.emit(wire.PendingUpdates(ts=time.time(), manager="apt" if m.name == "dpkg" else m.name, updates=updates))
        self.state.set("packages.pending.checked", time.time())

    async def pending_loop(self) -> None:
        interval = self.settings.pending_updates_interval
        last = self.state.get("packages.pending.checked") or 0
        # apt-get -s costs about a second and a half of CPU and 70 MB for a moment: never at
        # agent start (boot is busy enough, and a fleet starting together should not
        # simulate upgrades in step), at least a few minutes later, spread out.
        first_wait = max(random.uniform(*PENDING_START_DELAY), last + interval - time.time())
        await self._wanted_or(first_wait)
        while True:
            self.pending_wanted.clear()
            await self.check_pending()
            await self._wanted_or(interval)

    async def _wanted_or(self, seconds: float) -> None:
        """Until a check is asked for, or ``seconds`` pass (see run_cmd on wait_for)."""
        try:
            async with asyncio.timeout(seconds):
                await self.pending_wanted.wait()
        except TimeoutError:
            pass

    def watch(self) -> None:
        """inotify on each package log (a write) and on its directory (the log created or
        rotated): a quiet node looks at its package log when it is written, not every
        packages_poll. Writes to the other files there (rsyslog's, beside dpkg.log) wake
        nothing. Without inotify (or a directory) the poll stays."""
        self.names = {os.path.basename(m.log_path) for m in self.managers}
        try:
            ino = INotify(nonblocking=True)
        except OSError as e:
            log.info("packages: no inotify (%s); looking every %ss", e, self.settings.packages_poll)
            return
        try:
            for d in {os.path.dirname(m.log_path) for m in self.managers}:
                ino.add_watch(d, F.CREATE | F.MOVED_TO | F.MOVED_FROM | F.DELETE)
        except OSError as e:
            ino.close()
            log.info("packages: cannot watch the package log (%s); looking every %ss", e, self.settings.packages_poll)
            return
        self.ino = ino
        self.watch_logs()
        asyncio.get_running_loop().add_reader(ino.fd, self.drain)

    def watch_logs(self) -> None:
        """A watch on each package log there is (again after a rotation made a new one)."""
        assert self.ino is not None
        for m in self.managers:
            with contextlib.suppress(OSError):  # not there yet: its directory says when it is
                self.log_watches.add(self.ino.add_watch(m.log_path, F.MODIFY))

    def drain(self) -> None:
        """Read what inotify has; a write to (or a rotation of) a package log sets ``written``."""
        if self.ino is None:
            return
        try:
            events = self.ino.read(timeout=0)
        except OSError:
            events = []
        named = any(ev.name in self.names for ev in events)
        if named or any(ev.wd in self.log_watches or ev.mask & F.Q_OVERFLOW for ev in events):
            self.written.set()
        self.log_watches -= {ev.wd for ev in events if ev.mask & F.IGNORED}  # a rotated log deleted
        if named:
            self.watch_logs()

    def unwatch(self) -> None:
        if self.ino is not None:
            asyncio.get_running_loop().remove_reader(self.ino.fd)
            self.ino.close()
            self.ino = None
            self.log_watches = set()

    async def run(self) -> None:
        pending = None
        if self.settings.pending_updates_interval:
            pending = asyncio.create_task(self.pending_loop(), name="packages:pending")
        try:
            self.watch()  # before the first read: a write from here on wakes the loop
            if self.apt is not None:
                self.apt.start()
            for m in self.managers:
                if self.tails[m.name].start():
                    await self.follow(m)  # what happened while the agent was stopped
                    self.release(m)
                await self.snapshot(m)
            dirty: dict[str, float] = {}  # manager -> time of the last change seen
            while True:
                if self.ino is None:
                    await asyncio.sleep(self.settings.packages_poll)
                elif dirty:  # a burst: read on every packages_poll, release once it settles
                    settled_at = min(dirty.values()) + self.settings.packages_settle
                    await asyncio.sleep(min(self.settings.packages_poll, max(0.0, settled_at - time.monotonic())))
                else:
                    await aio.wait(self.written, BACKSTOP)
                self.written.clear()
                now = time.monotonic()
                for m in self.managers:
                    if await self.follow(m):
                        dirty[m.name] = now
                    elif m.name in dirty and now - dirty[m.name] >= self.settings.packages_settle:
                        del dirty[m.name]
                        self.release(m)
                        await self.snapshot(m)
                        self.pending_wanted.set()  # an upgrade may have cleared some
        finally:
            self.unwatch()
            for m in self.managers:  # stopping: what was seen is not lost (positions moved on)
                self.release(m)
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
