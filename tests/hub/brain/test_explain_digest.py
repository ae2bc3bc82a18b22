"""explain tells an alert's story from the real tables; digest finds maintenance and only
proposes it; the three commands work end to end on a real database."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from brain_fakes import FakeModel, playbooks
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from bench._brainfleet import build_fleet  # noqa: E402
from hub.brain import runtime  # noqa: E402
from hub.brain.cli import COMMANDS  # noqa: E402
from hub.brain.digest import digest, propose  # noqa: E402
from hub.brain.explain import explain, render  # noqa: E402
from hub.brain.propose import decide  # noqa: E402
from hub.cli import cli  # noqa: E402
from hub.errors import NotFound  # noqa: E402
from hub.store import open_db  # noqa: E402

for _c in COMMANDS:
    cli.add_command(_c)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("fleet") / "homelab.db"
    return path, build_fleet(path)


@pytest.fixture
def fleet(built, tmp_path):
    path = tmp_path / "hub" / "homelab.db"
    path.parent.mkdir()
    shutil.copy(built[0], path)
    yield path, built[1]
    runtime.configure(None, None, None)


def alert_row(path, aid):
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return dict(db.execute("SELECT * FROM alerts WHERE id = ?", (aid,)).fetchone())
    finally:
        db.close()


def test_explain_shows_timeline_decision_and_citations(fleet):
    path, _now = fleet
    runtime.configure(None, path, None)
    alert = alert_row(path, 1)  # nginx failed on web1
    ev = sqlite3.connect(path).execute(
        "SELECT id FROM events WHERE node = 'web1' AND kind = 'service' ORDER BY id DESC").fetchone()[0]
    m = FakeModel({"playbook": "restart-unit", "params": {}, "evidence": [f"E{ev}"],
                   "rationale": "nginx failed after a config edit"})
    r = decide(alert, [{"playbook": "restart-unit", "params": {"unit": "nginx.service"}}], playbooks(), model=m)
    assert r["decision_id"]
    ex = explain(1, path)
    assert ex["alert"]["rule"] == "unit_failed"
    assert any("nginx.service active -> failed" in t["what"] for t in ex["timeline"])
    [d] = ex["decisions"]
    assert d["cited"][f"E{ev}"].startswith("service nginx.service")
    text = render(ex)
    assert "nginx failed after a config edit" in text and f"cited [E{ev}]" in text and "fake.gguf" in text
    with pytest.raises(NotFound, match="no alert with id 999"):
        explain(999, path)


def test_digest_finds_updates_kernels_and_trends_and_never_runs(fleet):
    path, now = fleet
    books = {pb.name: pb for pb in __import__("agent.playbook", fromlist=["load_dir"]).load_dir(
        Path(__file__).resolve().parents[3] / "playbooks").values()}
    found = digest(path, books, now)
    got = {(f["node"], f["check"], f["playbook"]) for f in found}
    assert ("pi", "pending_updates", "apt-upgrade") in got  # 25 pending, 3 security
    assert ("nas", "pending_updates", "apt-upgrade") in got  # 1 security
    assert ("nas", "old_kernels", "apt-autoremove") in got  # three linux-image packages
    assert ("nas", "disk_trend", "disk-report") in got  # /srv filling ~1.9 points a day
    assert not any(f["node"] == "web1" and f["check"] == "disk_trend" for f in found)  # flat
    trend = next(f for f in found if f["check"] == "disk_trend")
    assert trend["params"]["path"] == "/srv" and "problem" not in trend
    db = open_db(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        ids = propose(db, found)
        db.execute("COMMIT")
        reqs = db.execute("SELECT rule, node, candidates FROM proposal_requests ORDER BY id").fetchall()
        assert len(ids) == len(found) == len(reqs) and {r[0] for r in reqs} == {"digest"}
        assert json.loads(reqs[0][2])[0]["playbook"] in {f["playbook"] for f in found}
        assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0  # nothing ran
    finally:
        db.close()


def test_commands_end_to_end(fleet, monkeypatch):
    path, _ = fleet
    monkeypatch.setenv("HOMELAB_MODEL", "none")
    d = str(path.parent)
    r = CliRunner().invoke(cli, ["ask", "--data-dir", d, "which", "nodes", "are", "offline?"])
    assert r.exit_code == 0, r.output
    assert "Offline nodes: node laptop" in r.output and "FROM nodes" in r.output and "laptop" in r.output
    r = CliRunner().invoke(cli, ["ask", "--data-dir", d, "--json", "which units have failed?"])
    out = json.loads(r.output)
    assert out["template"] == "failed_units" and {row[1] for row in out["rows"]} == {"nginx.service", "smbd.service"}
    assert out["decision_id"] and out["sql"].startswith("SELECT")
    r = CliRunner().invoke(cli, ["explain", "--data-dir", d, "4"])
    assert r.exit_code == 0 and "disk_full on nas" in r.output
    r = CliRunner().invoke(cli, ["explain", "--data-dir", d, "77"])
    assert r.exit_code != 0 and "no alert with id 77" in r.output
    r = CliRunner().invoke(cli, ["digest", "--data-dir", d])
    assert r.exit_code == 0 and "apt-upgrade" in r.output and "Nothing was run" in r.output
    r = CliRunner().invoke(cli, ["ask", "--data-dir", str(path.parent / "nope"), "anything"])
    assert r.exit_code != 0 and "no hub database" in r.output


def test_knowledge_base_feeds_context_and_howto_answers(fleet):
    from hub import kb
    from hub.brain import ask as askmod
    from hub.brain import context

    path, now = fleet
    db = open_db(path)
    db.execute("BEGIN IMMEDIATE")
    kb.add_text(db, "nginx runbook", "# When nginx fails\nIf nginx fails to bind port 80, another server holds it;"
                " stop apache2 before restarting nginx.", "notes/nginx.md")
    db.execute("COMMIT")
    db.close()
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    ro.row_factory = sqlite3.Row
    try:
        ctx = context.build(ro, {**alert_row(path, 1), "summary": "nginx.service failed to bind port 80"})
    finally:
        ro.close()
    notes = [it for it in ctx.items if it.kind == "kb"]
    assert notes and notes[0].id.startswith("K") and "apache2" in notes[0].text
    out = askmod.ask("how do I fix nginx failing to bind port 80?", path, model=None, record=None, now=now)
    assert out["kind"] == "kb" and out["rows"] and out["rows"][0][1] == "nginx runbook"
