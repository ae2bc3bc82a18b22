"""File integrity via inotify: create, modify, delete, move and attribute changes under the
watched paths (default ``/etc``), recursively, with excludes.

Each report carries size, mode, owner and SHA-256; small text files also carry a unified
diff against the last content seen. A baseline in ``state.db`` makes three things work:
a ``touch`` (or a backup tool resetting times) is not a change, changes made while the agent
was stopped are reported at start, and diffs have something to compare with.

Secrets stay on the node: a file that is not world-readable gets no diff and no stored
content, only the fact and hash of the change, unless its path is opted in with
``content_paths``.
"""

from __future__ import annotations

import asyncio
import difflib
import errno
import fnmatch
import hashlib
import logging
import os
import stat
import time

from inotify_simple import INotify
from inotify_simple import flags as F

from agent import wire
from agent.collectors import Collector

log = logging.getLogger(__name__)

MASK = (F.CREATE | F.CLOSE_WRITE | F.MODIFY | F.DELETE | F.MOVED_FROM | F.MOVED_TO
        | F.ATTRIB | F.DELETE_SELF | F.MOVE_SELF | F.DONT_FOLLOW | F.EXCL_UNLINK)
HASH_MAX = 64 * 1024 * 1024  # larger files are tracked by size/mode/owner only
SETTLE = 0.25  # seconds of quiet before a burst of writes is reported as one change
DIFF_MAX_CHARS = 64 * 1024
BASELINE_SENT = "files.baseline_sent"
BASELINE_PART_FILES, BASELINE_PART_BYTES = 500, 1024 * 1024


class FilesCollector(Collector):
    name = "files"

    def __init__(self, settings, emit, state):
        super().__init__(settings, emit, state)
        self.roots = [os.path.abspath(p) for p in settings.watch]
        for r in self.roots:
            if not os.path.exists(r):
                raise ValueError(f"watch path {r} does not exist")
        self.excludes = list(settings.exclude)
        self.content_paths = [os.path.abspath(p) for p in settings.content_paths]
        self.diff_max = settings.diff_max_bytes
        self.db = state.db
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS file_baseline (path TEXT PRIMARY KEY, size INTEGER, mode INTEGER,"
            " uid INTEGER, gid INTEGER, sha256 TEXT, content BLOB)"
        )
        self.inotify: INotify | None = None
        self.wd_path: dict[int, str] = {}
        self.dirty: set[str] = set()
        self.moves: dict[int, str] = {}  # cookie -> source path, until its MOVED_TO arrives
        self._flush: asyncio.TimerHandle | None = None
        self.watch_failed = False

    # -- helpers ---------------------------------------------------------------------

    def excluded(self, path: str) -> bool:
        base = os.path.basename(path)
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(base, p) for p in self.excludes)

    def may_send_content(self, path: str, mode: int) -> bool:
        if mode & stat.S_IROTH:
            return True
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.content_paths)

    def baseline(self, path: str):
        return self.db.execute(
            "SELECT size, mode, uid, gid, sha256, content FROM file_baseline WHERE path = ?", (path,)
        ).fetchone()

    def observe(self, path: str):
        """(stat, sha256, text content or None) for a regular file, or None if gone."""
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        digest, content = None, None
        if st.st_size <= HASH_MAX:
            try:
                with open(path, "rb") as f:
                    data = f.read(HASH_MAX + 1)
            except OSError:
                data = None
            if data is not None:
                digest = hashlib.sha256(data).hexdigest()
                if (len(data) <= self.diff_max and b"\0" not in data
                        and self.may_send_content(path, st.st_mode)):
                    try:
                        content = data.decode("utf-8")
                    except UnicodeDecodeError:
                        content = None
        return st, digest, content

    # -- watching ----------------------------------------------------------------------

    def add_tree(self, root: str, report_new: bool) -> None:
        for dirpath, dirnames, filenames in os.walk(root):
            if self.excluded(dirpath):
                dirnames[:] = []
                continue
            self.add_watch(dirpath)
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
            if report_new:  # a directory that appeared at run time: its files are new
                for name in filenames:
                    p = os.path.join(dirpath, name)
                    if not self.excluded(p):
                        self.check(p)

    def add_watch(self, path: str) -> None:
        assert self.inotify is not None
        try:
            wd = self.inotify.add_watch(path, MASK)
        except OSError as e:
            if e.errno == errno.ENOSPC and not self.watch_failed:
                self.watch_failed = True
                self.emit(wire.Notice(ts=time.time(), source=self.name, level="warning",
                                      message="inotify watch limit reached (fs.inotify.max_user_watches): some directories are not watched"))
            return
        self.wd_path[wd] = path

    def scan_all(self, quiet: bool) -> None:
        known = {r[0] for r in self.db.execute("SELECT path FROM file_baseline")}
        seen = set()
        for root in self.roots:
            if os.path.isfile(root):
                self.check(root, quiet)
                seen.add(root)
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                if self.excluded(dirpath):
                    dirnames[:] = []
                    continue
                for name in filenames:
                    p = os.path.join(dirpath, name)
                    if not self.excluded(p):
                        seen.add(p)
                        self.check(p, quiet)
        for p in known - seen:
            if any(p == r or p.startswith(r.rstrip("/") + "/") for r in self.roots):
                self.check(p, quiet)

    # -- change detection --------------------------------------------------------------

    def check(self, path: str, quiet: bool = False, src_path: str | None = None) -> None:
        """Compare a path with its baseline, record the new state, report the difference."""
        old = self.baseline(path)
        now = self.observe(path)
        if now is None:
            if old is not None:
                self.db.execute("DELETE FROM file_baseline WHERE path = ?", (path,))
                if not quiet:
                    self.emit(wire.FileChange(ts=time.time(), action="delete", path=path,
                                              old_sha256=old[4], secret=not (old[1] or 0) & stat.S_IROTH))
            return
        st, digest, content = now
        mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        secret = not self.may_send_content(path, st.st_mode)
        self.db.execute(
            "INSERT OR REPLACE INTO file_baseline (path, size, mode, uid, gid, sha256, content) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (path, st.st_size, mode, uid, gid, digest, content),
        )
        if quiet:
            return
        if src_path is not None:
            self.emit(wire.FileChange(ts=time.time(), action="move", path=path, src_path=src_path,
                                      size=st.st_size, mode=mode, uid=uid, gid=gid, sha256=digest, secret=secret))
            return
        if old is None:
            self.emit(wire.FileChange(ts=time.time(), action="create", path=path, size=st.st_size,
                                      mode=mode, uid=uid, gid=gid, sha256=digest, content_changed=True,
                                      secret=secret, diff=self.diff(path, None, content)))
            return
        o_size, o_mode, o_uid, o_gid, o_sha, o_content = old
        content_changed = digest != o_sha if digest and o_sha else st.st_size != o_size
        attrs_changed = (mode, uid, gid) != (o_mode, o_uid, o_gid)
        if not content_changed and not attrs_changed:
            return  # a touch, or a rewrite with identical bytes: nothing happened
        self.emit(wire.FileChange(
            ts=time.time(), action="modify" if content_changed else "attrib", path=path,
            size=st.st_size, mode=mode, uid=uid, gid=gid, sha256=digest, old_sha256=o_sha,
            content_changed=content_changed, secret=secret,
            diff=self.diff(path, o_content, content) if content_changed else None,
        ))

    def diff(self, path: str, old: str | bytes | None, new: str | None) -> str | None:
        if new is None:
            return None
        if isinstance(old, bytes):
            old = old.decode("utf-8", "replace")
        lines = difflib.unified_diff(
            (old or "").splitlines(keepends=True), new.splitlines(keepends=True),
            fromfile=f"a{path}" if old is not None else "/dev/null", tofile=f"b{path}",
        )
        text = "".join(lines)
        if len(text) > DIFF_MAX_CHARS:
            text = text[:DIFF_MAX_CHARS] + "\n... diff truncated ...\n"
        return text or None

    # -- the first-start inventory ------------------------------------------------------

    def send_baseline(self) -> None:
        """Once per node (first start, or the first start of an agent that has this): every
        watched file with hash, mode and owner, and the content of small non-secret text files,
        so the hub can recreate configuration the agent never saw change."""
        entries, size = [], 0
        parts: list[list[wire.BaselineFile]] = []
        for path, fsize, mode, uid, gid, sha, content in self.db.execute(
                "SELECT path, size, mode, uid, gid, sha256, content FROM file_baseline ORDER BY path"):
            if isinstance(content, bytes):
                content = content.decode("utf-8", "replace")
            secret = not self.may_send_content(path, mode or 0)
            entries.append(wire.BaselineFile(path, fsize or 0, mode or 0, uid or 0, gid or 0, sha,
                                             secret, None if secret else content))
            size += len(content or "")
            if len(entries) >= BASELINE_PART_FILES or size >= BASELINE_PART_BYTES:
                parts.append(entries)
                entries, size = [], 0
        if entries or not parts:
            parts.append(entries)
        now = time.time()
        sent = [self.emit(wire.FileBaseline(ts=now, files=files, part=i, parts=len(parts)))
                for i, files in enumerate(parts, 1)]
        if all(sent):  # a part shed by a full queue: the whole baseline goes again next start
            self.state.set(BASELINE_SENT, now)

    # -- inotify -----------------------------------------------------------------------

    def on_readable(self) -> None:
        assert self.inotify is not None
        for ev in self.inotify.read(timeout=0):
            if ev.mask & F.Q_OVERFLOW:
                self.dirty.add("\0rescan")
                continue
            if ev.mask & F.IGNORED:
                self.wd_path.pop(ev.wd, None)
                continue
            base = self.wd_path.get(ev.wd)
            if base is None:
                continue
            path = os.path.join(base, ev.name) if ev.name else base
            if self.excluded(path):
                continue
            if ev.mask & F.ISDIR:
                if ev.mask & (F.CREATE | F.MOVED_TO):
                    self.add_tree(path, report_new=True)
                elif ev.mask & (F.DELETE | F.MOVED_FROM):
                    self.dirty.add("\0rescan")
                continue
            if ev.mask & F.MOVED_FROM:
                self.moves[ev.cookie] = path
            elif ev.mask & F.MOVED_TO and ev.cookie in self.moves:
                src = self.moves.pop(ev.cookie)
                old = self.baseline(src)
                if old is not None:
                    self.db.execute("DELETE FROM file_baseline WHERE path = ?", (src,))
                self.check(path, src_path=src)
                self.dirty.discard(src)
                continue
            self.dirty.add(path)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(SETTLE, self.flush)

    def flush(self) -> None:
        self._flush = None
        for src in self.moves.values():  # moved out of the watched tree: gone
            self.dirty.add(src)
        self.moves.clear()
        dirty, self.dirty = self.dirty, set()
        if "\0rescan" in dirty:
            self.scan_all(quiet=False)
            return
        self.db.execute("BEGIN")
        try:
            for path in sorted(dirty):
                self.check(path)
        finally:
            self.db.execute("COMMIT")

    async def run(self) -> None:
        self.inotify = INotify()
        loop = asyncio.get_running_loop()
        first_run = self.db.execute("SELECT count(*) FROM file_baseline").fetchone()[0] == 0
        self.db.execute("BEGIN")
        for root in self.roots:
            if os.path.isdir(root):
                self.add_tree(root, report_new=False)
            else:
                self.add_watch(root)
        self.db.execute("COMMIT")
        # Whatever changed while we were not running is reported now.
        self.db.execute("BEGIN")
        self.scan_all(quiet=first_run)
        self.db.execute("COMMIT")
        if not self.state.get(BASELINE_SENT):
            self.send_baseline()
        loop.add_reader(self.inotify.fileno(), self.on_readable)
        try:
            await asyncio.Event().wait()
        finally:
            loop.remove_reader(self.inotify.fileno())
            self.inotify.close()
            self.inotify = None
