"""`kb watch DIR`: keep a folder (an Obsidian vault, a docs tree) in sync with inotify.

Events are gathered until the folder is quiet for ``debounce`` seconds (editors save in
bursts: temp file, write, rename), then applied: written and created files are re-read
(unchanged content is a no-op thanks to the hash), deleted ones removed, and a rename
inside the folder moves the document -- its id and any category a person set survive.
A queue overflow or a start-up triggers a full rescan, so nothing is missed while the
watcher was not running.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as F

from hub.errors import BadRequest
from hub.kb import add, ingest
from hub.kb.store import remove_source, rename_source
from hub.store import connect

log = logging.getLogger(__name__)

MASK = (F.CLOSE_WRITE | F.CREATE | F.DELETE | F.MOVED_FROM | F.MOVED_TO | F.DELETE_SELF
        | F.MOVE_SELF | F.ONLYDIR | F.EXCL_UNLINK)


class Watcher:
    def __init__(self, db_file: Path, root: Path, *, max_bytes: int = ingest.MAX_BYTES,
                 debounce: float = 0.5, report: Callable[[str], None] = lambda s: None):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise BadRequest(f"kb watch: {self.root} is not a directory")
        self.db = connect(db_file)
        self.max_bytes, self.debounce, self.report = max_bytes, debounce, report
        self.ino = INotify()
        self.wds: dict[int, Path] = {}
        self.stopped = False

    # -- watches ------------------------------------------------------------------------

    def _watch_tree(self, top: Path) -> None:
        for d, dirs, _ in os.walk(top):
            dirs[:] = [x for x in dirs if x not in ingest.SKIP_DIRS and not x.startswith(".")]
            try:
                self.wds[self.ino.add_watch(d, MASK)] = Path(d)
            except OSError as e:  # vanished or unreadable: report, keep watching the rest
                self.report(f"cannot watch {d}: {e.strerror}")

    def _unwatch_under(self, top: Path) -> None:
        for wd, p in list(self.wds.items()):
            if p == top or top in p.parents:
                del self.wds[wd]
                try:
                    self.ino.rm_watch(wd)
                except OSError:
                    pass  # the kernel already dropped it with the directory

    def _ignored(self, p: Path) -> bool:
        """Inside a hidden or VCS folder (relative to the root, which itself may be hidden)."""
        try:
            rel = p.relative_to(self.root)
        except ValueError:
            return True
        return any(part in ingest.SKIP_DIRS or part.startswith(".") for part in rel.parts)

    # -- applying changes ---------------------------------------------------------------

    def _write(self, fn):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            r = fn(self.db)
            self.db.execute("COMMIT")
            return r
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _ingest(self, paths: list[Path]) -> None:
        if not paths:
            return
        s = add(self.db, [str(p) for p in paths], max_bytes=self.max_bytes)
        for verb, items in (("added", s.added), ("updated", s.updated)):
            for doc_id, src in items:
                self.report(f"{verb} doc {doc_id}: {src}")
        for src, reason in s.skipped:
            self.report(f"skipped {src}: {reason}")

    def _remove(self, p: Path) -> None:
        n = self._write(lambda db: remove_source(db, str(p)))
        if n:
            self.report(f"removed {n} doc(s): {p}")

    def _known(self, p: Path) -> bool:
        prefix = str(p).rstrip("/") + "/"
        return self.db.execute(
            "SELECT 1 FROM kb_documents WHERE source = ? OR substr(source, 1, ?) = ? LIMIT 1",
            (str(p), len(prefix), prefix)).fetchone() is not None

    def rescan(self) -> None:
        """Everything under the root in, everything gone from disk out."""
        self._ingest([self.root])
        prefix = str(self.root).rstrip("/") + "/"
        gone = [src for (src,) in self.db.execute(
            "SELECT source FROM kb_documents WHERE substr(source, 1, ?) = ?", (len(prefix), prefix))
            if not Path(src).is_file() or self._ignored(Path(src))]
        for src in gone:
            self._remove(Path(src))

    def _apply(self, events: list) -> None:
        changed: dict[Path, None] = {}  # ordered set
        moved_from: dict[int, Path] = {}
        moves: list[tuple[Path, Path]] = []
        gone: list[Path] = []
        for ev in events:
            if ev.mask & F.Q_OVERFLOW:
                self.report("inotify queue overflowed: rescanning")
                self.rescan()
                return
            base = self.wds.get(ev.wd)
            if base is None or not ev.name:
                if ev.mask & F.IGNORED:
                    self.wds.pop(ev.wd, None)
                continue
            p = base / ev.name
            if self._ignored(p):
                continue
            if ev.mask & F.MOVED_FROM:
                moved_from[ev.cookie] = p
            elif ev.mask & F.MOVED_TO:
                src = moved_from.pop(ev.cookie, None)
                if src is not None and self._known(src):
                    moves.append((src, p))
                else:  # moved in from outside, or an editor's temp file saved over p
                    changed[p] = None
                if ev.mask & F.ISDIR:
                    if src is not None:
                        self._unwatch_under(src)
                    self._watch_tree(p)
            elif ev.mask & F.CREATE and ev.mask & F.ISDIR:
                self._watch_tree(p)
                changed[p] = None  # files may have landed before the watch did
            elif ev.mask & (F.CLOSE_WRITE | F.CREATE) and not ev.mask & F.ISDIR:
                changed[p] = None
            elif ev.mask & F.DELETE:
                gone.append(p)
        # A move whose MOVED_TO we could not see (into a folder created a moment before its
        # watch existed) looks like a delete plus a new file: pair them by content.
        self._pair_by_content(moved_from, changed, moves)
        gone += moved_from.values()  # moved out of the folder
        for old, new in moves:
            n = self._write(lambda db, o=old, n=new: rename_source(db, str(o), str(n)))
            self.report(f"renamed {n} doc(s): {old} -> {new}")
            changed.setdefault(new, None)  # the content may have changed on the way
        for p in gone:
            if p not in changed:
                self._unwatch_under(p)
                self._remove(p)
        self._ingest([p for p in changed if p.exists()])

    def _pair_by_content(self, moved_from: dict, changed: dict, moves: list) -> None:
        known = {}
        for cookie, p in list(moved_from.items()):
            r = self.db.execute("SELECT sha256 FROM kb_documents WHERE source = ?", (str(p),)).fetchone()
            if r is not None:
                known[r[0]] = cookie
        if not known:
            return
        for c in list(changed):
            files = ingest.walk(c) if c.is_dir() else [c]
            for f in files:
                if self._known(f) or not f.is_file():
                    continue
                try:
                    if f.stat().st_size > self.max_bytes:
                        continue
                    digest = ingest.content_digest(f.read_bytes())
                except OSError:  # gone again already
                    continue
                cookie = known.pop(digest, None)
                if cookie is not None:
                    moves.append((moved_from.pop(cookie), f))

    # -- loop ---------------------------------------------------------------------------

    def run(self, duration: float | None = None) -> None:
        self._watch_tree(self.root)
        self.rescan()
        self.report(f"watching {self.root}")
        end = None if duration is None else time.monotonic() + duration
        try:
            while not self.stopped and (end is None or time.monotonic() < end):
                wait = 1.0 if end is None else max(0.0, min(1.0, end - time.monotonic()))
                events = list(self.ino.read(timeout=int(wait * 1000)))
                if not events:
                    continue
                burst_end = time.monotonic() + 10 * max(self.debounce, 0.1)
                while time.monotonic() < burst_end:  # gather until quiet, but not forever
                    more = self.ino.read(timeout=int(self.debounce * 1000))
                    if not more:
                        break
                    events += more
                if any(ev.wd in self.wds and self.wds[ev.wd] == self.root and ev.mask & (F.DELETE_SELF | F.MOVE_SELF)
                       for ev in events):
                    self.report(f"{self.root} was removed or moved; stopping")
                    return
                self._apply(events)
        except KeyboardInterrupt:
            pass
        finally:
            self.ino.close()
            self.db.close()
