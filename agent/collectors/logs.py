"""Log lines: journald where a journal exists, else the classic syslog files; plus any files
given with ``--log-file`` (``settings.log_files``), always.

journald: read in-process through libsystemd's sd-journal API (``agent/journal.py``; a
``journalctl`` child cost 5x the memory). Where libsystemd cannot be loaded the syslog files are
followed instead, as where there is no journal. The position is the cursor of the last entry
queued, which travels with that entry into the agent's spool and is stored in the same
transaction (``emit(..., at=("journald", cursor))``); the next start seeks to it and reads on
from the entry after it: a restart, even a ``kill -9`` at any instant, neither repeats nor skips
entries, and entries written before a reboot are read like any others (journalctl 252's
``--follow`` showed the current boot only, docs/lab.md). The first start begins at the end of
the journal. One loop reads whatever is there in slices of JOURNAL_SLICE entries, then waits on
the journal's inotify descriptor, and at least every POLL seconds. Messages are cut at
MAX_MESSAGE, and a field longer than four times that is not decompressed whole.

Files: each is read from its saved (device, inode, offset), kept in the agent's state.db.
Rotation (a new inode at the path) first finishes the old file (kept open until the new one
has lines, so late writes before the writer reopens are not lost), then starts the new one at
its beginning; truncation (the file shrank) starts over at 0. A file rotated while the agent
was stopped is finished from ``PATH.1`` if the saved inode is there. A file seen for the
first time is read from its end. inotify on the files' directories says when to look; a slow
poll covers what inotify cannot see (NFS, a full watch table).

Bounded under a flood: files are read in chunks of at most CHUNK bytes per pass, lines over
MAX_LINE are cut, and at most ``log_max_rate`` lines per second (bursts up to 10x) are parsed
and queued; the rest are shed and counted in a ``notice``. A full agent queue sheds more,
counted by the agent as a ``dropped`` event. File positions are saved one interval behind what was
queued, so a crash repeats a second of lines rather than losing it; a position that did not
move is not written again, and with no files to follow (the journal alone, the common case)
the housekeeping wakes every NOTICE_EVERY seconds rather than every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import time
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as F

from agent import journal, wire
from agent.collectors import Collector
from agent.logparse import MAX_MESSAGE, Parsed, journal_entry, parse_line

log = logging.getLogger(__name__)

SYSLOG_FILES = ("/var/log/syslog", "/var/log/auth.log", "/var/log/messages")
JOURNAL_DIRS = ("/run/log/journal", "/var/log/journal")
JOURNAL_FIELDS = ("MESSAGE", "PRIORITY", "SYSLOG_FACILITY", "SYSLOG_IDENTIFIER", "SYSLOG_PID", "_PID",
                  "_COMM", "_HOSTNAME", "_SYSTEMD_UNIT", "_SYSTEMD_USER_UNIT")  # what journal_entry reads
JOURNAL_SLICE = 500  # entries read between yields to the event loop
CHUNK = 256 * 1024
MAX_LINE = 16 * 1024
POLL = 5.0  # seconds between looks when inotify is quiet
SAVE_EVERY = 1.0
ROTATE_GRACE = 30.0  # seconds a rotated file is kept open while its replacement stays empty
NOTICE_EVERY = 10.0
JOURNAL_KEY = "journald"  # the journal cursor's key among the agent's spooled positions
FUTURE_SLACK = 86400.0


def journal_missing(settings) -> str | None:
    """Why journald cannot be read here, or None when it can."""
    if not settings.log_journal:
        return "log_journal is off"
    if settings.journal_dir:
        if not Path(settings.journal_dir).is_dir():
            return f"no journal directory {settings.journal_dir}"
    elif not any(glob.glob(f"{d}/*.journal") or glob.glob(f"{d}/*/*.journal") for d in JOURNAL_DIRS):
        return "no journal"
    try:
        journal.load()
    except OSError as e:
        return f"a journal but {journal.LIBRARY} cannot be loaded ({e})"
    return None


class RateLimit:
    """Token bucket over all sources: ``take(n)`` says how many of n lines may go."""

    def __init__(self, rate: float):
        self.rate, self.burst = rate, rate * 10
        self.tokens, self.at = self.burst, time.monotonic()

    def take(self, n: int) -> int:
        if self.rate <= 0:
            return n
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        k = min(n, int(self.tokens))
        self.tokens -= k
        return k


class Tail:
    """One followed file. ``pos`` is (dev, inode, offset) of the next unread byte."""

    def __init__(self, path: str, saved: dict | None):
        self.path = path
        self.fd: int | None = None
        self.dev = self.ino = 0
        self.off = 0
        self.skipping = False  # inside an over-long line, dropping until its end
        self.moved_at: float | None = None  # when the path was first seen to name another file
        self.pending_old: tuple[str, int] | None = None  # rotated-away file still to finish
        if saved is None and not os.path.exists(path):
            saved = {"dev": 0, "ino": 0, "off": 0}  # appears later: all of it is new
        self.saved = saved

    def position(self) -> dict | None:
        return {"dev": self.dev, "ino": self.ino, "off": self.off} if self.fd is not None else None

    def _open_current(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return False
        st = os.fstat(fd)
        self.close()
        self.fd, self.dev, self.ino, self.off, self.skipping = fd, st.st_dev, st.st_ino, 0, False
        saved, self.saved = self.saved, None
        if saved is None:
            self.off = st.st_size  # first sight: only what is written from now on
        elif (saved["dev"], saved["ino"]) == (st.st_dev, st.st_ino):
            self.off = saved["off"] if saved["off"] <= st.st_size else 0
        else:
            # rotated while we were away: finish the old file first if it is still there
            for cand in (self.path + ".1", self.path + "-old"):
                with contextlib.suppress(OSError):
                    cst = os.stat(cand)
                    if (cst.st_dev, cst.st_ino) == (saved["dev"], saved["ino"]) and cst.st_size > saved["off"]:
                        self.pending_old = (cand, saved["off"])
                        break
        return True

    def close(self) -> None:
        self.moved_at = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def read(self, budget: int) -> tuple[list[bytes], bool]:
        """Complete lines available now (at most ``budget`` bytes' worth) and whether more wait."""
        if self.pending_old is not None:
            path, off = self.pending_old
            self.pending_old = None
            data = b""
            with contextlib.suppress(OSError), open(path, "rb") as f:
                f.seek(off)
                data = f.read(min(budget, CHUNK))
            if len(data) == min(budget, CHUNK) and b"\n" in data:  # more after this chunk
                end = data.rfind(b"\n")
                self.pending_old = (path, off + end + 1)
                data = data[:end]
            return [line[:MAX_LINE] for line in data.splitlines()], True
        if self.fd is None:
            if not self._open_current():
                return [], False
            if self.pending_old is not None:  # finish the rotated file first
                return [], True
        assert self.fd is not None
        try:
            st = os.stat(self.path)
            moved = (st.st_dev, st.st_ino) != (self.dev, self.ino)
        except FileNotFoundError:
            moved = True  # deleted or renamed, not yet recreated: finish what we have
        size = os.fstat(self.fd).st_size
        if size < self.off:
            log.info("logs: %s was truncated; reading from its start", self.path)
            self.off, self.skipping = 0, False
        data = os.pread(self.fd, min(budget, CHUNK), self.off)
        if not data:
            if moved:
                # The writer may still append to the renamed file until it reopens (logrotate's
                # postrotate HUP). Switch once the new file has lines, so none are lost, or
                # after ROTATE_GRACE for a writer that is quiet.
                now = time.monotonic()
                if self.moved_at is None:
                    self.moved_at = now
                try:
                    new_size = os.stat(self.path).st_size
                except FileNotFoundError:
                    new_size = None
                if new_size is not None and (new_size > 0 or now - self.moved_at > ROTATE_GRACE):
                    self.close()
                    self.saved = {"dev": 0, "ino": 0, "off": 0}  # new file: from its start
                    return [], True
            return [], False
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) < MAX_LINE and not (moved and len(data) < CHUNK):
                return [], False  # a line still being written
            # an over-long line (or the unterminated end of a rotated file): cut it here
            self.off += len(data)
            was, self.skipping = self.skipping, True
            if moved:
                self.skipping = False
            return ([] if was else [data[:MAX_LINE]]), True
        self.off += end + 1
        lines = data[:end].split(b"\n")
        if self.skipping:
            lines = lines[1:]
            self.skipping = False
        more = len(data) == min(budget, CHUNK) or moved
        return lines, more


class LogsCollector(Collector):
    name = "logs"

    def __init__(self, settings, emit, state):
        super().__init__(settings, emit, state)
        missing = journal_missing(settings)
        self.use_journal = missing is None
        files = list(settings.log_files)
        if missing and journal.LIBRARY in missing:
            log.warning("logs: %s; following the syslog files instead", missing)
        if not self.use_journal:
            files = [f for f in SYSLOG_FILES if os.path.exists(f)] + files
        self.files = list(dict.fromkeys(os.path.abspath(f) for f in files))
        for f in self.files:
            if not os.path.isdir(os.path.dirname(f)):
                raise ValueError(f"log file {f}: directory {os.path.dirname(f)} does not exist")
        if settings.log_max_rate < 0:
            raise ValueError(f"log_max_rate must be 0 or more, got {settings.log_max_rate}")
        self.limit = RateLimit(float(settings.log_max_rate))
        self.legacy_cursor_file = Path(settings.state_dir) / "journal.cursor"
        self.tails = {f: Tail(f, state.get(f"logs.file:{f}")) for f in self.files}
        self.shed: dict[str, int] = {}
        self.stats = {"lines": 0, "emitted": 0, "shed": 0, "queue_full": 0}
        self._saved_positions: dict = {}
        self._written: dict = {}  # the positions last stored, per file
        self._cursor: str | None = None  # the last entry read (queued or shed)

    @classmethod
    def unavailable(cls, settings) -> str | None:
        if settings.log_files:
            return None
        missing = journal_missing(settings)
        if missing is None or any(os.path.exists(f) for f in SYSLOG_FILES):
            return None
        return (f"{missing} and none of " + ", ".join(SYSLOG_FILES)
                + " exist; add files to follow with --log-file")

    # -- shared -----------------------------------------------------------------------------

    def _ship(self, source: str, parsed: list[Parsed]) -> None:
        now = time.time()
        for p in parsed:
            ts = p.ts if p.ts is not None and p.ts < now + FUTURE_SLACK else now
            event = wire.Log(
                ts=ts, source=source, message=p.message, program=_cut(p.program), pid=p.pid,
                severity=p.severity, facility=p.facility, host=_cut(p.host), unit=_cut(p.unit))
            ok = self.emit(event, at=(JOURNAL_KEY, p.cursor)) if p.cursor else self.emit(event)
            if ok:
                self.stats["emitted"] += 1
            else:
                self.stats["queue_full"] += 1

    def _count_shed(self, source: str, n: int) -> None:
        if n:
            self.shed[source] = self.shed.get(source, 0) + n
            self.stats["shed"] += n

    def _report_shed(self) -> None:
        if not self.shed:
            return
        total = sum(self.shed.values())
        where = ", ".join(f"{s}: {n}" for s, n in sorted(self.shed.items()))
        self.emit(wire.Notice(
            ts=time.time(), source=self.name, level="warning",
            message=f"shed {total} log lines over log_max_rate {self.settings.log_max_rate}/s ({where})"[:4000]))
        self.shed.clear()

    def save(self, final: bool = False) -> None:
        """Persist file positions one interval behind (what was queued a second ago is spooled
        by now), or the current ones when stopping (the agent spools its queue before exiting).
        The journal's cursor is not saved here: it is spooled with its entries."""
        current = {f: t.position() for f, t in self.tails.items()}
        target = current if final else self._saved_positions
        for f, pos in target.items():
            if pos is not None and pos != self._written.get(f):  # a quiet file costs no write
                self.state.set(f"logs.file:{f}", pos)
                self._written[f] = pos
        self._saved_positions = current

    # -- files ------------------------------------------------------------------------------

    def pass_files(self) -> bool:
        """One bounded pass over every file. True when some file has more waiting."""
        more = False
        for path, tail in self.tails.items():
            try:
                lines, m = tail.read(CHUNK)
            except OSError as e:
                log.warning("logs: %s: %s", path, e)
                tail.close()
                continue
            more |= m
            if not lines:
                continue
            self.stats["lines"] += len(lines)
            k = self.limit.take(len(lines))
            self._count_shed(path, len(lines) - k)
            self._ship(path, [parse_line(b[:MAX_LINE].decode("utf-8", "replace")) for b in lines[:k]])
        return more

    async def follow_files(self) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        ino: INotify | None = None
        try:
            ino = INotify()
            for d in {os.path.dirname(f) for f in self.files}:
                ino.add_watch(d, F.MODIFY | F.CREATE | F.MOVED_TO | F.MOVED_FROM | F.DELETE | F.CLOSE_WRITE)
            loop.add_reader(ino.fd, wake.set)
        except OSError as e:
            log.warning("logs: inotify unavailable (%s); polling every %ss", e, POLL)
            if ino is not None:
                ino.close()
                ino = None
        try:
            while True:
                if self.pass_files():
                    await asyncio.sleep(0)  # let the spooler and others run between chunks
                    continue
                # Not wait_for: on 3.11 it swallows a cancel that races a wakeup, and a log
                # file written at shutdown (the agent's own) makes that race likely.
                timer = loop.call_later(POLL, wake.set)
                try:
                    await wake.wait()
                finally:
                    timer.cancel()
                wake.clear()
                if ino is not None:
                    ino.read(timeout=0)
        finally:
            if ino is not None:
                loop.remove_reader(ino.fd)
                ino.close()

    # -- journald ---------------------------------------------------------------------------

    def saved_cursor(self) -> str:
        """Where the spool ends; an agent from before cursors were spooled left a file."""
        cursor = self.state.positions.get(JOURNAL_KEY)
        if cursor:
            return cursor
        try:
            return self.legacy_cursor_file.read_text().strip()
        except FileNotFoundError:
            return ""

    def _position(self, j: journal.Journal) -> bool:
        """Just before the first entry to ship, or on it: True when on it."""
        cursor = self._cursor or self.saved_cursor()
        if cursor:
            try:
                j.seek_cursor(cursor)
            except RuntimeError as e:  # a cursor that does not parse: no position at all
                log.warning("logs: saved journal cursor %r: %s; from the end", cursor, e)
                cursor = ""
        if cursor:
            # On the cursor's own entry (already shipped) the next read moves past it; if that
            # entry is gone (vacuumed) this is the first one after it, to be shipped. (Not a
            # step back to read it again: with nothing before it, there is no step back.)
            return j.next() and not j.test_cursor(cursor)
        j.seek_tail()  # first start: from now on
        if not j.previous():  # an empty journal: everything it will get is new
            j.seek_head()
        return False

    def _journal_entry(self, j: journal.Journal) -> Parsed:
        e: dict[str, str | None] = {f: j.get(f, MAX_MESSAGE * 4) for f in JOURNAL_FIELDS}
        e["__REALTIME_TIMESTAMP"] = str(j.realtime())
        e["__CURSOR"] = j.cursor()
        return journal_entry(e)

    def _take_entry(self, j: journal.Journal) -> None:
        self.stats["lines"] += 1
        if self.limit.take(1):
            p = self._journal_entry(j)
            self._cursor = p.cursor
            self._ship("journald", [p])
        else:
            self._cursor = j.cursor()
            self._count_shed("journald", 1)

    def drain_journal(self, j: journal.Journal) -> bool:
        """Read up to JOURNAL_SLICE entries; True when more may wait."""
        for _ in range(JOURNAL_SLICE):
            if not j.next():
                return False
            self._take_entry(j)
        return True

    async def follow_journal(self) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        j = journal.Journal(self.settings.journal_dir and str(self.settings.journal_dir),
                            threshold=MAX_MESSAGE * 4)  # a huge field is not decompressed whole
        try:
            if self._position(j):
                self._take_entry(j)
            loop.add_reader(j.fd, wake.set)
            while True:
                if self.drain_journal(j):
                    await asyncio.sleep(0)  # a backlog: let the spooler and others run
                    continue
                # inotify can miss a rotation on some filesystems: look at least every POLL
                at = j.timeout()
                delay = POLL if at is None else min(POLL, max(0.0, at - time.monotonic()))
                timer = loop.call_later(delay, wake.set)
                try:
                    await wake.wait()
                finally:
                    timer.cancel()
                wake.clear()
                j.process()
        finally:
            loop.remove_reader(j.fd)
            j.close()

    # -- run --------------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        last_notice = time.monotonic()
        # only files have positions to save; the journal alone needs a look at shedding
        every = SAVE_EVERY if self.tails else NOTICE_EVERY
        while True:
            await asyncio.sleep(every)
            self.save()
            if time.monotonic() - last_notice >= NOTICE_EVERY:
                last_notice = time.monotonic()
                self._report_shed()

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._housekeeping(), name="logs:save")]
        if self.use_journal:
            tasks.append(asyncio.create_task(self.follow_journal(), name="logs:journal"))
        if self.files:
            tasks.append(asyncio.create_task(self.follow_files(), name="logs:files"))
        log.info("logs: following %s", ", ".join((["journald"] if self.use_journal else []) + self.files))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # a source that failed: raise so the agent restarts us with backoff
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._report_shed()
            self.save(final=True)
            for t in self.tails.values():
                t.close()


def _cut(s: str | None, n: int = 4096) -> str | None:
    return s[:n] if s else s
