"""Noise (issue 19, item 5): a package install is a change on the timeline, not a firing alert;
an open alert's stored summary says the current value, not the one of its first firing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent import wire
from hub.rules import alerts
from hub.rules.engine import Engine
from hub.rules.loader import load_paths
from hub.schema import migrate

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_767_225_600.0


def shipped() -> Engine:
    rules, errors = load_paths([ROOT / "rules"])
    assert errors == []
    return Engine(rules)


def test_package_installs_raise_no_alert_with_the_shipped_rules():
    eng = shipped()
    for i, action in enumerate(("install", "remove", "purge", "upgrade")):
        ev = wire.Package(ts=T0 + i, action=action, manager="dpkg", name=f"p{i}", version="1.0")
        eng.feed("nas", i + 1, ev, T0 + i)
    eng.tick(T0 + 60)
    assert eng.drain() == []


def test_the_stored_summary_follows_the_count():
    eng = shipped()
    db = sqlite3.connect(":memory:", isolation_level=None)
    migrate(db)
    line = "Failed password for root from 203.0.113.9 port 4242 ssh2"
    for k in range(12):
        t = T0 + k * 10
        eng.feed("nas", k + 1, wire.Log(ts=t, source="journal", program="sshd", message=line), t)
        eng.tick(t)
        db.execute("BEGIN")
        alerts.apply(db, eng.drain(), [], eng.rules)
        db.execute("COMMIT")
        summary = db.execute("SELECT summary FROM alerts WHERE rule = 'ssh-brute-force'").fetchone()
        if k < 9:
            assert summary is None
        else:
            assert summary == (f"{k + 1} failed SSH logins from 203.0.113.9 on nas in 10 minutes",)
