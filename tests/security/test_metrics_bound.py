"""Finding 10: one node cannot grow the hub's series (and the /metrics page) without bound."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from agent import wire
from hub.project import MAX_SERIES_PER_NODE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))
from selfdoc_helpers import FakeNode  # noqa: E402


async def test_series_per_node_are_bounded_and_counted(hub):
    flood = await FakeNode(hub, "flood").join()
    good = await FakeNode(hub, "good").join()
    extra = 700
    now = time.time()
    for start in range(0, MAX_SERIES_PER_NODE + extra, 2000):
        stop = min(start + 2000, MAX_SERIES_PER_NODE + extra)
        await flood.send(wire.Metrics(ts=now, samples={f'x{{id="{i}"}}': 1.0 for i in range(start, stop)}))
    await good.send(wire.Metrics(ts=now, samples={"cpu_percent": 3.0}))
    await flood.send(wire.Metrics(ts=now + 1, samples={'x{id="0"}': 2.0}))  # a known series still updates
    counts = dict(hub.query("SELECT node, count(*) FROM series GROUP BY node"))
    assert counts == {"flood": MAX_SERIES_PER_NODE, "good": 1}
    async with aiohttp.ClientSession() as s, s.get(f"{hub.url}/metrics") as r:
        text = await r.text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert len(fams["homelab_x"].samples) == MAX_SERIES_PER_NODE
    assert [s.value for s in fams["homelab_x"].samples if s.labels["id"] == "0"] == [2.0]
    assert [s.value for s in fams["homelab_cpu_percent"].samples] == [3.0]
    refused = {s.labels["node"]: s.value for s in fams["homelab_node_series_refused"].samples}
    assert refused == {"flood": extra}
    # the raw events are all kept (nothing the node sent is lost)
    assert hub.query("SELECT count(*) FROM events WHERE node = 'flood'") == [(4,)]
