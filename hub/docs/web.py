"""Keeps the node pages current: a commit subscriber notes which nodes had relevant events
(cheap, in the writer thread); a debounced task rebuilds their pages from a read
connection, commits them to git if asked (docs_git), and indexes each page into the
knowledge base so the brain and `kb search` find "what is on web1"."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from hub.config import db_path
from hub.docs import pages as docsgen
from hub.keys import ALERT_LISTENERS, READ_DB, SETTINGS, WRITER
from hub.store import connect
from hub.tasks import running

log = logging.getLogger(__name__)


class Rebuilder:
    def __init__(self, app: web.Application):
        s = app[SETTINGS]
        self.app = app
        self.out = Path(s.docs_dir or s.data_dir / "docs")
        self.debounce = s.docs_debounce
        self.git = s.docs_git
        self.dirty: set[str] = set()
        self.lock = threading.Lock()  # the writer thread marks, the loop takes
        # a wake is on its way or not yet taken by run(): further marks need none (at 500
        # nodes a commit or an alert transition marks ~30 times a second; each wake is a
        # write to the loop's self-pipe and a thread switch)
        self.wake_pending = False
        self.last_change = 0.0
        self.wake = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def mark(self, nodes) -> None:  # any thread; once per commit, not per event
        nodes = {n for n in nodes if n}
        if nodes:
            with self.lock:
                self.dirty |= nodes
                wake, self.wake_pending = not self.wake_pending, True
            self.last_change = time.monotonic()
            if wake:
                self.loop.call_soon_threadsafe(self.wake.set)

    def on_commit(self, committed) -> None:  # writer thread
        self.mark({c.node for c in committed if c.kind in docsgen.RELEVANT_KINDS})

    def on_alert(self, db, alert: dict) -> None:  # writer thread
        self.mark([alert.get("node")])

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            with self.lock:  # a mark from now on wakes us again
                self.wake_pending = False
            self.wake.clear()
            # debounce: wait until changes have been quiet for a while
            while (quiet := time.monotonic() - self.last_change) < self.debounce:
                await asyncio.sleep(self.debounce - quiet)
            with self.lock:
                nodes, self.dirty = self.dirty, set()
            try:
                await self.rebuild(sorted(nodes))
            except Exception:  # noqa: BLE001 - the next change retries; ingest never waits on this
                log.exception("rebuilding node pages failed")

    async def rebuild(self, nodes: list[str]) -> docsgen.BuildResult:
        loop = asyncio.get_running_loop()
        res, pages = await loop.run_in_executor(None, self._build, nodes)
        if pages:
            await self.app[WRITER].run(lambda db: _index(db, pages))
        log.info("%s", res.message())
        return res

    def _build(self, nodes: list[str]):
        db = connect(db_path(self.app[SETTINGS].data_dir), readonly=True)
        total = docsgen.BuildResult()
        pages = {}
        try:
            known = set(docsgen.node_names(db))
            for n in nodes:
                if n not in known:
                    continue
                r = docsgen.build(db, self.out, n)
                total.written += r.written
                total.sections.update(r.sections)
                if r.sections.get(n):
                    pages[n] = (self.out / "nodes" / f"{n}.md").read_text()
        finally:
            db.close()
        if self.git and total.written:
            docsgen.git_commit(self.out, total)
        return total, pages


def _index(db, pages: dict[str, str]) -> None:
    try:
        from hub.kb import add_text
    except ImportError:  # a hub built without the knowledge base
        return
    for node, text in pages.items():
        add_text(db, f"Node {node}", text, f"docs:node/{node}", tags=("node", "self-doc"), node=node)


REBUILDER = web.AppKey("docs_rebuilder", Rebuilder)


async def _ctx(app: web.Application) -> AsyncIterator[None]:
    if not app[SETTINGS].docs_auto:
        yield
        return
    rb = Rebuilder(app)
    app[REBUILDER] = rb
    app[WRITER].subscribers.append(rb.on_commit)
    app[ALERT_LISTENERS].append(rb.on_alert)
    # pages of nodes that changed while the hub was down (or before this feature existed)
    rb.mark(name for (name,) in app[READ_DB].execute("SELECT name FROM nodes WHERE last_seq > 0"))
    async with running(rb.run(), "docs-rebuild"):
        yield
    app[WRITER].subscribers.remove(rb.on_commit)
    app[ALERT_LISTENERS].remove(rb.on_alert)


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_ctx)  # after storage (app.py adds it before the features)
