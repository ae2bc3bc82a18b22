"""Ingest of every supported kind, idempotency by hash, updates in place, bad input."""

from __future__ import annotations

import os

import hub.kb as kb


def rows(db, sql, args=()):
    return [tuple(r) for r in db.execute(sql, args)]


def test_markdown_front_matter_wikilinks_tags_and_heading_paths(kbdb, tmp_path):
    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "zfs.md").write_text(
        "---\ntitle: ZFS disk swap\ntags: [zfs, disks]\nnode: nas1\ncategory: storage\ndate: 2024-03-01\n---\n"
        "# ZFS disk swap\n\nSee [[Backups|the backup note]] and [[Shopping list]]. #runbook\n\n"
        "## Identify\nRun zpool status -x to find the FAULTED device.\n\n"
        "### Serial numbers\nsmartctl -i shows the serial.\n\n"
        "## Replace\n```\n# a comment, not a heading\nzpool replace tank sdb sdc\n```\n")
    s = kb.add(kbdb, [str(vault)])
    assert [src for _, src in s.added] == [str(vault / "zfs.md")] and not s.skipped
    (doc_id, title, cat, how, node, date), = rows(kbdb, "SELECT id, title, category, category_source, node, date FROM kb_documents")
    assert (title, cat, how, node) == ("ZFS disk swap", "storage", "given", "nas1")
    assert date > 1.7e9 and date < 1.71e9  # 2024-03-01 from front matter, not the file's mtime
    tags = {t for (t,) in rows(kbdb, "SELECT tag FROM kb_tags WHERE document_id = ?", (doc_id,))}
    assert {"zfs", "disks", "runbook"} <= tags
    assert rows(kbdb, "SELECT target FROM kb_links ORDER BY target") == [("Backups",), ("Shopping list",)]
    paths = [p for (p,) in rows(kbdb, "SELECT heading_path FROM kb_passages ORDER BY ord")]
    assert paths == ["ZFS disk swap", "ZFS disk swap > Identify", "ZFS disk swap > Identify > Serial numbers",
                     "ZFS disk swap > Replace"]
    body = rows(kbdb, "SELECT body FROM kb_documents")[0][0]
    assert "the backup note" in body and "[[" not in body and "title:" not in body
    # a declared category is a training example for the classifier
    assert rows(kbdb, "SELECT category, source FROM kb_training") == [("storage", "given")]


def test_text_html_and_code(kbdb, tmp_path):
    (tmp_path / "ups.txt").write_text("UPS battery log\n\nReplaced the APC battery in March.\n")
    (tmp_path / "clip.html").write_text(
        "<html><head><title>Pi-hole behind Unbound</title><style>p{}</style>"
        "<script>track()</script></head><body><nav>Home | Blog</nav>"
        "<article><h1>Pi-hole behind Unbound</h1><p>Point Pi-hole at 127.0.0.1#5335.</p>"
        "<h2>Config</h2><pre>server:\n  port: 5335</pre></article><footer>(c) someone</footer></body></html>")
    (tmp_path / "backup.sh").write_text("#!/bin/bash\nrestic backup /srv --exclude-caches\n")
    s = kb.add(kbdb, [str(tmp_path / n) for n in ("ups.txt", "clip.html", "backup.sh")])
    assert len(s.added) == 3, s.as_dict()
    docs = {r[0]: r[1:] for r in rows(kbdb, "SELECT kind, title, language, category, body FROM kb_documents")}
    assert docs["text"][0] == "UPS battery log"
    title, _, _, body = docs["html"]
    assert title == "Pi-hole behind Unbound"
    assert "127.0.0.1#5335" in body and "track()" not in body and "Home | Blog" not in body and "(c)" not in body
    assert docs["code"][:3] == ("backup.sh", "bash", "snippet")
    paths = {p for (p,) in rows(kbdb, "SELECT heading_path FROM kb_passages")}
    assert "Pi-hole behind Unbound > Config" in paths


def test_broken_html_still_goes_in(kbdb, tmp_path):
    (tmp_path / "broken.html").write_text("<div><h2>Half a page <b>about VLANs</p></span><p>tagged ports on the switch &amp; trunk<p")
    s = kb.add(kbdb, [str(tmp_path / "broken.html")])
    assert len(s.added) == 1 and not s.skipped
    assert kb.search(kbdb, "trunk")[0]["heading_path"].endswith("Half a page about VLANs")


def test_unchanged_is_a_no_op_and_changed_updates_in_place(kbdb, tmp_path):
    f = tmp_path / "note.md"
    f.write_text("# Router\n\nThe router is a Mikrotik hEX.\n")
    first = kb.add(kbdb, [str(f)])
    (doc_id, _), = first.added
    before = rows(kbdb, "SELECT id, updated FROM kb_documents")
    again = kb.add(kbdb, [str(f)])
    assert again.unchanged == [(doc_id, str(f))] and not again.added and not again.updated
    assert rows(kbdb, "SELECT id, updated FROM kb_documents") == before
    f.write_text("# Router\n\nThe router is now an OPNsense box.\n")
    changed = kb.add(kbdb, [str(f)])
    assert changed.updated == [(doc_id, str(f))]
    assert rows(kbdb, "SELECT count(*) FROM kb_documents") == [(1,)]
    assert kb.search(kbdb, "Mikrotik") == []
    assert kb.search(kbdb, "OPNsense")[0]["document_id"] == doc_id
    # the FTS index holds exactly the live passages
    assert rows(kbdb, "SELECT count(*) FROM kb_passages_fts") == rows(kbdb, "SELECT count(*) FROM kb_passages")


def test_bad_input_is_skipped_with_reasons_and_the_rest_goes_in(kbdb, tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "good.md").write_text("# Good\n\nfine text\n")
    (d / "image.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (d / "latin1.txt").write_bytes("caf\xe9 notes".encode("latin-1"))
    (d / "big.txt").write_text("x" * 5000)
    (d / "empty.md").write_text("   \n")
    (d / "loop.md").symlink_to(d / "loop2.md")
    (d / "loop2.md").symlink_to(d / "loop.md")
    (d / "bad-front.md").write_text("---\ntags: [unclosed\n---\n# Still here\n\nbody text\n")
    (d / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    os.mkfifo(d / "pipe.md")  # reading it would block forever
    s = kb.add(kbdb, [str(d), str(tmp_path / "missing.md"), str(d / "photo.jpg"), str(d / "loop2.md")],
               max_bytes=4096)
    reasons = {os.path.basename(src): r for src, r in s.skipped}
    assert "binary" in reasons["image.md"]
    assert "not valid utf-8" in reasons["latin1.txt"] and "offset 3" in reasons["latin1.txt"]
    assert "too large" in reasons["big.txt"] and "kb_max_bytes" in reasons["big.txt"]
    assert reasons["empty.md"] == "empty file"
    assert "symbolic links" in reasons["loop.md"]  # found while walking the folder
    assert reasons["loop2.md"] in ("symbolic link loop", "cannot read: Too many levels of symbolic links")
    assert reasons["missing.md"] == "no such file or directory"
    assert "unsupported file type '.jpg'" == reasons["photo.jpg"]
    assert reasons["pipe.md"] == "not a regular file"
    assert sorted(os.path.basename(src) for _, src in s.added) == ["bad-front.md", "good.md"]
    assert any("front matter is not valid YAML at line" in w for _, w in s.warnings)


def test_add_text_inside_a_transaction_updates_by_source(kbdb):
    kbdb.execute("BEGIN IMMEDIATE")
    doc_id = kb.add_text(kbdb, "Node nas1", "# Node nas1\n\n## Disks\nfour WD Red in raidz2\n", "node:nas1",
                         category="hardware", tags=["generated"], node="nas1")
    kbdb.execute("COMMIT")
    assert kb.add_text(kbdb, "Node nas1", "# Node nas1\n\n## Disks\nfour WD Red in raidz2\n", "node:nas1",
                       category="hardware", tags=["generated"], node="nas1") == doc_id
    again = kb.add_text(kbdb, "Node nas1", "# Node nas1\n\n## Disks\nsix disks in raidz2\n", "node:nas1",
                        category="hardware", tags=["generated"], node="nas1")
    assert again == doc_id
    r = kb.search(kbdb, "raidz2 disks", node="nas1", tag="generated")
    assert r[0]["document_id"] == doc_id and r[0]["heading_path"] == "Node nas1 > Disks"
    assert "six" in kbdb.execute("SELECT body FROM kb_documents").fetchone()[0]


def test_remove_leaves_nothing_behind_even_without_foreign_keys(tmp_path):
    import sqlite3

    from hub.store import open_db

    open_db(tmp_path / "k.db").close()
    db = sqlite3.connect(tmp_path / "k.db", isolation_level=None)  # foreign_keys off: SQLite's default
    doc = kb.add_text(db, "Note", "# Note\n\n## A\nalpha #x [[Other]]\n", "n:1", category="note", tags=["t"])
    kb.set_category(db, doc, "how-to")
    kb.remove(db, doc)
    for table in ("kb_documents", "kb_passages", "kb_tags", "kb_links", "kb_passages_fts"):
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    # the lesson stays, detached from the removed document
    assert db.execute("SELECT document_id, category FROM kb_training").fetchall() == [(None, "how-to")]
