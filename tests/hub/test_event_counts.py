"""The event_counts stored query (one range count per kind and node, m006) answers exactly
what the plain GROUP BY over the last 24 hours answers, on a real database."""

from __future__ import annotations

import random
import time

import yaml

from agent import wire
from hub.paths import shipped
from hub.store import open_db

GROUPED = """select node, kind, count(*) as events, datetime(max(ts), 'unixepoch') as latest
  from events where ts > strftime('%s', 'now') - 86400 group by node, kind"""


def test_event_counts_matches_the_grouped_count(tmp_path):
    db = open_db(tmp_path / "homelab.db")
    assert db.execute("SELECT 1 FROM sqlite_master WHERE name = 'events_kind_node_ts'").fetchone()
    rng = random.Random(5)
    now = time.time()
    nodes = ["a", "b", "c", "quiet"]
    db.executemany("INSERT INTO nodes (name, created) VALUES (?, 0)", [(n,) for n in nodes])
    kinds = [wire.Log, wire.Command, wire.Metrics, wire.FileChange]
    rows = []
    for i in range(1, 3001):
        node = rng.choice(nodes[:3])
        kind = rng.choice(kinds).__struct_config__.tag
        ts = now - rng.uniform(0, 3 * 86400)  # two thirds older than the window
        rows.append((i, node, i, ts, kind, "{}"))
    rows.append((3001, "quiet", 1, now - 2 * 86400, "log", "{}"))  # only old events: no row
    db.executemany("INSERT INTO events (id, node, seq, ts, kind, data) VALUES (?, ?, ?, ?, ?, ?)", rows)
    meta = yaml.safe_load((shipped("datasette") / "metadata.yml").read_text())
    sql = meta["databases"]["homelab"]["queries"]["event_counts"]["sql"]
    got = [tuple(r) for r in db.execute(sql)]
    want = sorted(tuple(r) for r in db.execute(GROUPED))
    assert sorted(got) == want and len(want) >= 10
    assert [(n, -e) for n, _k, e, _l in got] == sorted((n, -e) for n, _k, e, _l in got)  # node, events desc
    assert "quiet" not in {r[0] for r in got}
    plan = " ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql))
    assert "events_kind_node_ts (kind=? AND node=? AND ts>?)" in plan
    db.close()
