"""The kb commands as a user runs them: real subprocesses on a real data directory."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

from tests.conftest import query, wait_for


def hubcli(data_dir, *args, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    r = subprocess.run([sys.executable, "-m", "hub", *args, "--data-dir", str(data_dir)],
                       capture_output=True, text=True, timeout=60, env=env)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_add_search_show_set_category_remove(tmp_path):
    data, notes = tmp_path / "hub", tmp_path / "notes"
    notes.mkdir()
    (notes / "dns.md").write_text("# Pi-hole\n\n## Upstream\nPi-hole forwards to Unbound on port 5335.\n")
    (notes / "ups.md").write_text("# UPS\n\nThe NUT server shuts everything down at 20% battery.\n")
    (notes / "blob.md").write_bytes(b"\x00\x01\x02")
    summary = json.loads(hubcli(data, "kb", "add", str(notes), "--json").stdout)
    assert len(summary["added"]) == 2 and summary["skipped"][0]["reason"].startswith("binary")
    res = json.loads(hubcli(data, "kb", "search", "which port does unbound use", "--json").stdout)
    assert res[0]["heading_path"] == "Pi-hole > Upstream" and res[0]["source"] == str(notes / "dns.md")
    doc = res[0]["document_id"]
    shown = json.loads(hubcli(data, "kb", "show", str(doc), "--json").stdout)
    assert shown["title"] == "Pi-hole" and shown["passages"][0]["heading_path"] == "Pi-hole > Upstream"
    assert "Pi-hole > Upstream" in hubcli(data, "kb", "search", "unbound").stdout
    hubcli(data, "kb", "set-category", str(doc), "services")
    bad = hubcli(data, "kb", "set-category", str(doc), "bogus", check=False)
    assert bad.returncode != 0 and "unknown category 'bogus'" in bad.stderr
    listed = [json.loads(line) for line in hubcli(data, "kb", "list", "--json").stdout.splitlines()]
    assert {(d["id"], d["category"], d["category_source"]) for d in listed if d["id"] == doc} == {(doc, "services", "person")}
    assert json.loads(hubcli(data, "kb", "search", "unbound", "--category", "networking", "--json").stdout) == []
    hubcli(data, "kb", "remove", str(doc))
    assert query(data, "SELECT count(*) FROM kb_documents") == [(1,)]
    missing = hubcli(data, "kb", "show", str(doc), check=False)
    assert missing.returncode != 0 and f"no knowledge-base document with id {doc}" in missing.stderr


def test_watch_follows_adds_edits_renames_and_deletes(tmp_path):
    data, vault = tmp_path / "hub", tmp_path / "vault"
    vault.mkdir()
    (vault / "old.md").write_text("# Old\n\nthere from the start\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    log = open(tmp_path / "watch.log", "wb")  # noqa: SIM115
    p = subprocess.Popen([sys.executable, "-m", "hub", "kb", "watch", str(vault), "--data-dir", str(data),
                          "--debounce", "0.2", "--duration", "60"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        def docs():
            try:
                return dict(query(data, "SELECT source, id FROM kb_documents"))
            except sqlite3.OperationalError:  # the watcher has not created the database yet
                return {}

        wait_for(lambda: str(vault / "old.md") in docs(), 20, what="initial scan")
        (vault / "new.md").write_text("# New\n\nfirst version mentions gateways\n")
        wait_for(lambda: str(vault / "new.md") in docs(), 20, what="added file")
        new_id = docs()[str(vault / "new.md")]
        (vault / "new.md").write_text("# New\n\nsecond version mentions firewalls\n")
        wait_for(lambda: query(data, "SELECT count(*) FROM kb_passages WHERE text LIKE '%firewalls%'")[0][0] == 1,
                 20, what="edit picked up")
        hubcli(data, "kb", "set-category", str(new_id), "security")  # a person's choice must survive the move
        (vault / "sub").mkdir()
        (vault / "new.md").rename(vault / "sub" / "renamed.md")
        wait_for(lambda: docs().get(str(vault / "sub" / "renamed.md")) == new_id, 20, what="rename keeps the id")
        (vault / "old.md").unlink()
        wait_for(lambda: str(vault / "old.md") not in docs(), 20, what="delete")
        assert set(docs()) == {str(vault / "sub" / "renamed.md")}
        assert query(data, "SELECT category, category_source FROM kb_documents") == [("security", "person")]
    finally:
        p.terminate()
        p.wait(20)
        log.close()
    out = (tmp_path / "watch.log").read_text()
    assert "renamed 1 doc(s)" in out and "removed 1 doc(s)" in out, out
