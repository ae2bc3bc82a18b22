"""The command line at 80 columns and its one-line answers, as real `homelab-hub` subprocesses
over the seeded month (three nodes, one with a 39-character name; alerts from the shipped
rules, proposals)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import free_port
from tests.dashboard.seed import NODES

LONG = "workstation-with-a-rather-long-hostname"


def hub_cli(data_dir, *args, columns: int = 80, ok: bool = True, timeout: float = 120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    env.update(COLUMNS=str(columns), HOMELAB_MODEL="none", TERM="dumb")
    r = subprocess.run([sys.executable, "-m", "hub", *args, "--data-dir", str(data_dir)],
                       capture_output=True, text=True, env=env, timeout=timeout)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def fleet_dir(seeded_template, tmp_path):
    d = tmp_path / "hub"
    shutil.copytree(seeded_template, d)
    return d


def _names(data_dir) -> tuple[list[str], list[str]]:
    db = sqlite3.connect(data_dir / "homelab.db")
    try:
        rules = sorted({r[0] for r in db.execute("SELECT rule FROM alerts")})
    finally:
        db.close()
    return list(NODES), rules


# Every homelab-hub command that prints a table, with arguments that give it rows naming
# nodes and rules. (`tailnet sync` needs a tailscaled and is covered by its own tests.)
# With --json where the command has it: the JSON rows say how many cells name each node/rule.
TABLE_COMMANDS = [
    ("nodes",), ("alerts",), ("rules", "list"), ("proposals",), ("proposals", "--limit", "100"),
    ("changes", "--since", "40d"), ("changes", LONG, "--since", "40d"), ("kb", "list"),
    ("twin", LONG), ("playbooks", "list"), ("ask", "which", "alerts", "are", "firing"),
    ("ask", "what", "changed", "on", LONG), ("status",),
]
JSON = {"nodes", "alerts", "rules", "proposals", "changes", "kb"}


def _cells(out: str, name: str) -> int:
    """Occurrences of NAME as a whole cell: two spaces (or the line's edge) on either side."""
    return len(re.findall(rf"(?:^ ?|  ){re.escape(name)}(?=  |\s*$)", out, re.M))


def _expected(data_dir, args, names) -> dict[str, int]:
    keys = ("node", "rule", "name")
    if args[0] == "changes" and not args[1].startswith("-"):
        keys = ("rule",)  # one node's changes: the title names it, rows do not
    r = hub_cli(data_dir, *args, "--json")
    lines = r.stdout.splitlines()
    rows = [json.loads(x) for x in lines] if lines and not lines[0].startswith("[") else json.loads(r.stdout or "[]")
    want: dict[str, int] = {}
    for row in rows:
        for key in keys:
            if row.get(key) in names:
                want[row[key]] = want.get(row[key], 0) + 1
    return want


def test_every_table_fits_80_columns_without_cutting_names(fleet_dir, tmp_path):
    doc = tmp_path / "runbook.md"
    doc.write_text("# Restarting nginx\n\nsystemctl restart nginx.service\n")
    hub_cli(fleet_dir, "kb", "add", str(doc), "--node", LONG)
    nodes, rules = _names(fleet_dir)
    assert "sensitive-config-changed" in rules and "disk-almost-full" in rules
    names = set(nodes) | set(rules)
    seen: set[str] = set()
    for args in TABLE_COMMANDS:
        out = hub_cli(fleet_dir, *args).stdout
        assert "…" not in out, (args, out)
        if args[0] == "ask":  # the answer and its SQL are prose the terminal wraps; the table follows
            out = out[out.index("\n\n", out.index("Query")):]
        wide = [line for line in out.splitlines() if len(line) > 80]
        assert not wide, (args, wide)
        seen |= {n for n in names if _cells(out, n)}
        if args[0] in JSON:
            for name, n in _expected(fleet_dir, args, names).items():
                assert _cells(out, name) >= n, (args, name, n, out)
    assert LONG in seen and seen >= names, sorted(names - seen)


def test_alerts_at_80_columns_keep_the_summary(fleet_dir):
    out = hub_cli(fleet_dir, "alerts").stdout
    assert "unit-failed" in out and "nginx.service failed" in out
    assert "first seen" not in out  # chosen away at 80 columns
    assert "first seen" in hub_cli(fleet_dir, "alerts", columns=160).stdout


@pytest.mark.parametrize("args", [("twin", "nas"), ("changes", "nas"), ("ansible", "export", "nas", "-o", "x"),
                                  ("ansible", "drift", "nas"), ("docs", "build", "nas"), ("kb", "list", "--node", "nas"),
                                  ("ask", "what", "changed", "on", "nas", "yesterday")])
def test_unknown_node_suggests_the_closest_everywhere(fleet_dir, args):
    r = hub_cli(fleet_dir, *args, ok=False)
    assert r.returncode == 1
    assert r.stderr.strip() == "Error: no node 'nas'; did you mean nas01?", r.stderr


@pytest.mark.parametrize("old,new", [(("export", "ansible"), "ansible export"), (("drift",), "ansible drift")])
def test_old_spellings_still_work_and_name_the_new_one(fleet_dir, old, new):
    r = hub_cli(fleet_dir, *old, "nas", *(("-o", "x") if "export" in old else ()), ok=False)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"warning: `homelab-hub {' '.join(old)}` is deprecated; use `homelab-hub {new}`",
        "Error: no node 'nas'; did you mean nas01?"], r.stderr


def test_changes_without_node_lists_every_node(fleet_dir):
    rows = [json.loads(line) for line in hub_cli(fleet_dir, "changes", "--since", "40d", "--json").stdout.splitlines()]
    assert {r["node"] for r in rows} == set(NODES)
    out = hub_cli(fleet_dir, "changes", "--since", "40d").stdout
    assert "on any node" in out and LONG in out


def test_status_of_a_running_and_a_stopped_hub(fleet_dir, hub_process):
    r = json.loads(hub_cli(fleet_dir, "status", "--json").stdout)
    assert r["hub"]["running"] is False and r["nodes"]["total"] == 3
    assert r["rules"]["loaded"] > 5 and r["rules"]["file_errors"] == 0
    assert r["brain"]["state"] == "not running" and r["brain"]["model"] is None
    h = hub_process(fleet_dir).start()
    r = json.loads(hub_cli(fleet_dir, "status", "--json").stdout)
    assert r["hub"]["running"] is True and r["hub"]["url"] == h.url
    assert r["hub"]["writer_queue"] is not None and r["hub"]["writer_queue"] >= 0
    assert r["database_bytes"] > 1_000_000
    out = hub_cli(fleet_dir, "status").stdout
    assert "running" in out and "writer queue" in out and "of 3 online" in out


def test_growth_comes_from_the_recorded_sizes(fleet_dir):
    import time

    db = sqlite3.connect(fleet_dir / "homelab.db")
    size = (fleet_dir / "homelab.db").stat().st_size
    with db:
        db.execute("INSERT INTO db_sizes (ts, bytes) VALUES (?, ?)", (time.time() - 86400, size - 2_000_000))
    db.close()
    r = json.loads(hub_cli(fleet_dir, "status", "--json").stdout)
    per_day = r["growth_per_day"]["1d"]
    assert 1_500_000 < per_day < 2_500_000, per_day


def test_second_hub_on_a_data_dir_and_a_port_clash_are_one_line(fleet_dir, tmp_path, hub_process):
    h = hub_process(fleet_dir).start()
    r = hub_cli(fleet_dir, "up", "--listen", f"127.0.0.1:{free_port()}", "--no-datasette", "--duration", "5", ok=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"Error: {fleet_dir} is in use by another hub (pid {h.proc.p.pid}); stop it first, or pass another --data-dir"]
    other = tmp_path / "other"
    r = hub_cli(other, "serve", "--listen", f"127.0.0.1:{h.port}", ok=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{h.port}: the port is in use (another hub, or another program)"]
