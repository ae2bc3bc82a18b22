"""Cold-start keyword rules, learning from declared categories and a person's overrides."""

from __future__ import annotations

import hub.kb as kb
from hub.kb import classify


def test_keyword_rules_cold_start(kbdb):
    cats = kb.categories(kbdb)
    assert classify.choose("Replace a failed ZFS disk", "zpool replace; scrub the pool", "markdown", cats, None) == ("storage", "rules")
    assert classify.choose("x.py", "print(1)", "code", cats, None) == ("snippet", "rules")
    assert classify.choose("Untitled", "lorem ipsum", "markdown", cats, None) == ("note", "default")


MEDIA = ["Jellyfin transcoding with the iGPU", "Plex library scan schedule", "Sonarr and Radarr quality profiles",
         "Jellyfin subtitles for the kids", "Plex remote streaming bitrate", "Audiobookshelf for the audiobooks"]


def test_overrides_teach_the_classifier(kbdb):
    kbdb.execute("BEGIN IMMEDIATE")
    kb.sync_categories(kbdb, [*classify.DEFAULT_CATEGORIES, "media"])
    kbdb.execute("COMMIT")
    ids = [kb.add_text(kbdb, t, f"{t}. The media server runs in docker with a container for it.", f"m:{i}")
           for i, t in enumerate(MEDIA)]
    others = [kb.add_text(kbdb, t, b, f"o:{i}", category=c) for i, (t, b, c) in enumerate([
        ("Pi-hole DNS", "dns resolver on the network, dhcp off", "networking"),
        ("UPS shutdown", "nut shuts the server down on battery", "hardware"),
        ("SSH keys", "ed25519 keys only, no passwords", "security"),
    ])]
    assert others
    # before: the keyword rules know nothing about "media" and see docker/container -> services
    first = kbdb.execute("SELECT category, category_source FROM kb_documents WHERE id = ?", (ids[0],)).fetchone()
    assert tuple(first) == ("services", "rules")
    kbdb.execute("BEGIN IMMEDIATE")
    for i in ids:
        assert kb.set_category(kbdb, i, "media")["category"] == "media"
    kbdb.execute("COMMIT")
    assert kbdb.execute("SELECT count(*) FROM kb_training WHERE source = 'person'").fetchone()[0] == len(ids)
    new = kb.add_text(kbdb, "Jellyfin hardware acceleration", "Jellyfin media server in docker: enable VAAPI for Plex-like transcoding.", "m:new")
    row = kbdb.execute("SELECT category, category_source FROM kb_documents WHERE id = ?", (new,)).fetchone()
    assert tuple(row) == ("media", "learned")


def test_person_choice_survives_edits(kbdb):
    doc = kb.add_text(kbdb, "Grafana dashboards", "panels for the zfs pool", "g:1")
    kb.set_category(kbdb, doc, "services")
    kb.add_text(kbdb, "Grafana dashboards", "panels for the zfs pool and disks and raid", "g:1")
    row = kbdb.execute("SELECT category, category_source FROM kb_documents WHERE id = ?", (doc,)).fetchone()
    assert tuple(row) == ("services", "person")


def test_model_chooser_hook(kbdb):
    classify.set_model_chooser(lambda title, text, cats: "security" if "vault" in text else None)
    try:
        a = kb.add_text(kbdb, "Secrets", "hashicorp vault unseal", "h:1")
        b = kb.add_text(kbdb, "Disks", "zfs raid disk", "h:2")
    finally:
        classify.set_model_chooser(None)
    got = dict(kbdb.execute("SELECT id, category_source FROM kb_documents").fetchall())
    assert got == {a: "model", b: "rules"}


def test_auto_tags():
    assert "zfs" in classify.auto_tags("ZFS scrub schedule", "run a scrub monthly")
    assert classify.auto_tags("Shopping", "milk and bread") == []
