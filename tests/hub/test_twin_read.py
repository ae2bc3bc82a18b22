"""The twin read API on a real hub database, filled through the real projection: how full a
mount is comes from its latest disk_used_ratio sample, and every reader (the brain's context,
the maintenance digest, the node pages) sees it. Before the read API the brain and the digest
asked the mounts table for a used_bytes column it never had, and their errors were swallowed."""

from __future__ import annotations

from agent import wire
from hub.brain.context import twin_facts
from hub.brain.digest import temp_growth
from hub.errors import NotFound
from hub.project import Projector
from hub.store import open_db
from hub.twin import Twin, mount_usage

T = 1_700_000_000.0


def _db(tmp_path):
    db = open_db(tmp_path / "homelab.db")
    db.execute("INSERT INTO nodes (name, created) VALUES ('nas01', 1), ('pi', 1)")
    p = Projector(db)
    p.begin()
    inv = {"os": {"pretty_name": "Debian 12"}, "kernel": "6.1", "cpu": {"count": 4},
           "memory_bytes": 8 << 30,
           "mounts": [{"mountpoint": "/", "device": "/dev/sda1", "fstype": "ext4", "total_bytes": 100 << 30},
                      {"mountpoint": "/tmp", "device": "tmpfs", "fstype": "tmpfs", "total_bytes": 2 << 30}]}
    p.add("nas01", 1, T, wire.Inventory(ts=T, hostname="nas01", facts=inv))
    p.add("nas01", 2, T + 10, wire.Metrics(ts=T + 10, samples={
        'disk_used_ratio{mount="/"}': 0.41, 'disk_used_ratio{mount="/tmp"}': 0.97}))
    p.add("nas01", 3, T + 20, wire.Metrics(ts=T + 20, samples={'disk_used_ratio{mount="/tmp"}': 0.98}))
    db.execute("BEGIN")
    p.flush()
    db.execute("COMMIT")
    return db


def test_mount_usage_is_the_latest_sample(tmp_path):
    db = _db(tmp_path)
    mounts = {m["mountpoint"]: m for m in Twin(db, "nas01").mounts()}
    assert mounts["/"]["used_ratio"] == 0.41 and mounts["/tmp"]["used_ratio"] == 0.98
    assert mounts["/tmp"]["total_bytes"] == 2 << 30
    assert {(m["node"], m["mountpoint"]) for m in mount_usage(db)} == {("nas01", "/"), ("nas01", "/tmp")}


def test_the_brain_and_the_digest_see_how_full_a_mount_is(tmp_path):
    db = _db(tmp_path)
    facts = twin_facts(db, "nas01")
    assert "mount /tmp (tmpfs) 98% used of 2.0 GiB" in facts
    assert facts.index("mount /tmp (tmpfs) 98% used of 2.0 GiB") < facts.index(
        "mount / (ext4) 41% used of 100.0 GiB")  # fullest first
    assert [f["finding"] for f in temp_growth(db)] == ["/tmp is 98% full"]


def test_an_unknown_node_names_the_closest(tmp_path):
    db = _db(tmp_path)
    try:
        Twin(db, "nas")
    except NotFound as e:
        assert "did you mean nas01" in str(e)
    else:
        raise AssertionError("Twin accepted an unknown node")
    assert twin_facts(db, "nas") == []
