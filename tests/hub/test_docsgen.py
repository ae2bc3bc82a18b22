"""Self-documentation: pages built from what a node reported through a real hub; stable
across rebuilds; git commits that name what changed; automatic rebuild into the KB."""

from __future__ import annotations

import subprocess
import sys

import pytest
from selfdoc_helpers import (
    FakeNode,
    async_wait_for,
    created,
    inventory,
    modified,
    packages,
    query,
    service,
)

from hub.docs import pages as docsgen
from hub.docs.web import REBUILDER
from hub.errors import NotFound
from hub.store import connect


async def _fleet(hub) -> FakeNode:
    web1 = await FakeNode(hub, "web1").join()
    await web1.send(
        inventory("web1"),
        packages(("nginx", "1.22.1-9", True), ("libc6", "2.36-9", False), ("htop", "3.2.2-2", True)),
        service("nginx.service"), service("ssh.service"), service("cron.service", enabled="disabled"),
        created("/etc/nginx/nginx.conf", "worker_processes auto;\n"),
        created("/etc/shadow", "root:*:19000::::::\n", mode=0o640, secret=True),
    )
    await (await FakeNode(hub, "db1").join()).send(inventory("db1"))
    return web1


def _build(hub, out, node=None) -> docsgen.BuildResult:
    db = connect(hub.data_dir / "homelab.db", readonly=True)
    try:
        return docsgen.build(db, out, node)
    finally:
        db.close()


async def test_node_pages_are_complete_and_stable(hub, tmp_path):
    web1 = await _fleet(hub)
    out = tmp_path / "docs"
    res = _build(hub, out)
    assert sorted(p.name for p in res.written) == ["db1.md", "index.md", "web1.md"]
    page = (out / "nodes" / "web1.md").read_text()
    for needle in ("Debian GNU/Linux 12 (bookworm)", "Intel N100 × 4", "nvme0n1", "| / | /dev/nvme0n1p2 | ext4",
                   "| eth0 | aa:bb:cc:dd:ee:ff | 1500 | yes | 192.168.1.20/24 |",
                   "| nginx | 1.22.1-9 |", "| htop | 3.2.2-2 |", "3 installed, 2 of them installed by hand",
                   "| nginx.service | active (running) | enabled |",
                   "/etc/nginx/nginx.conf", "/etc/shadow (secret: content stays on the node)", "| 0640 |"):
        assert needle in page, needle
    assert "libc6" not in page and "cron.service" not in page
    index = (out / "index.md").read_text()
    assert "[db1](nodes/db1.md)" in index and "[web1](nodes/web1.md)" in index
    mtime = (out / "nodes" / "web1.md").stat().st_mtime_ns

    # nothing new on the node: nothing rewritten (no "generated at" churn)
    await web1.send(service("nginx.service"))  # same state again
    assert _build(hub, out).written == []
    assert (out / "nodes" / "web1.md").stat().st_mtime_ns == mtime

    await web1.send(modified("/etc/nginx/nginx.conf", "worker_processes auto;\n", "worker_processes 4;\n", ts=2000.0))
    res = _build(hub, out)
    assert [p.name for p in res.written] == ["web1.md"]
    assert res.sections == {"web1": ["Watched files", "Recent changes"]}
    assert "2000" not in res.message() and "web1: Watched files, Recent changes" in res.message()
    with pytest.raises(NotFound, match="no node 'nope'"):
        _build(hub, out, "nope")


async def test_docs_build_git_commits_name_what_changed(hub, tmp_path):
    web1 = await _fleet(hub)
    repo = tmp_path / "repo"

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "hub", "docs", "build", "--data-dir", str(hub.data_dir), *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r

    def log():
        return subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True,
                              text=True, check=True).stdout.splitlines()

    cli("--git", str(repo))
    assert log() == ["docs: db1: new page; web1: new page"]
    assert "nothing to commit" in cli("--git", str(repo)).stderr
    await web1.send(packages(("nginx", "1.22.1-9", True), ("libc6", "2.36-9", False), ("htop", "3.2.2-2", True),
                             ("tmux", "3.3a-3", True), ts=3000.0))
    cli("web1", "--git", str(repo))
    assert log()[0] == "docs: web1: Packages"
    r = subprocess.run([sys.executable, "-m", "hub", "docs", "build", "--data-dir", str(hub.data_dir),
                        "-o", str(tmp_path / "elsewhere"), "--git", str(repo)], capture_output=True, text=True)
    assert r.returncode != 0 and "outside the --git repository" in r.stderr


async def test_hub_rebuilds_pages_after_changes_and_indexes_them(hub):
    rb = hub.app[REBUILDER]
    rb.debounce = 0.2
    web1 = await _fleet(hub)
    page = rb.out / "nodes" / "web1.md"
    await async_wait_for(lambda: page.exists() and "nginx.conf" in page.read_text(), 20, what="auto rebuild")

    def kb_doc():
        rows = query(hub.data_dir, "SELECT body FROM kb_documents WHERE source = 'docs:node/web1'")
        return rows and rows[0][0]

    body = await async_wait_for(kb_doc, 20, what="the page in the knowledge base")
    assert "nginx" in body
    await web1.send(packages(("nginx", "1.24.0-1", True), ts=4000.0))
    await async_wait_for(lambda: "1.24.0-1" in page.read_text(), 20, what="rebuild after a package change")
    await async_wait_for(lambda: "1.24.0-1" in (kb_doc() or ""), 20, what="KB copy updated")


async def test_marks_wake_the_loop_once_until_the_rebuilder_takes_them(hub):
    """Every commit with a relevant event and every alert transition marks its node; at fleet
    scale that is many times a second, and each wake of the loop is a self-pipe write and a
    thread switch. Marks while a wake is pending add their nodes and wake nothing."""
    import asyncio
    import threading

    rb = hub.app[REBUILDER]
    rb.debounce = 60.0  # the rebuilder sits in its debounce once woken
    wakes = []
    real = rb.loop.call_soon_threadsafe

    def counting(cb, *args):
        if cb == rb.wake.set:
            wakes.append(cb)
        return real(cb, *args)

    rb.loop.call_soon_threadsafe = counting
    try:
        def marks(names):
            for n in names:
                rb.mark([n])

        await asyncio.to_thread(marks, ["a"])  # as the writer thread does
        await async_wait_for(lambda: not rb.wake.is_set() and not rb.wake_pending, 20, what="taken")
        t = threading.Thread(target=marks, args=([f"n{i}" for i in range(50)],))
        t.start()
        await asyncio.to_thread(t.join)
        await asyncio.sleep(0.1)
        assert len(wakes) == 2  # the first mark, then one for the fifty that came meanwhile
        assert {f"n{i}" for i in range(50)} <= rb.dirty
    finally:
        del rb.loop.call_soon_threadsafe
