"""The Grafana dashboard queries only metric names that /metrics really serves."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import yaml
from fleetlib import join, send
from prometheus_client.parser import text_string_to_metric_families

from agent import wire

GRAFANA = Path(__file__).resolve().parents[2] / "docs" / "grafana"

# PromQL words that are not metric names
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}


def prometheus_exprs(dash: dict) -> list[str]:
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            ds = t.get("datasource") or p.get("datasource") or {}
            if ds.get("type") == "prometheus":
                out.append(t["expr"])
    for v in dash.get("templating", {}).get("list", []):
        if (v.get("datasource") or {}).get("type") == "prometheus":
            out.append(v["query"]["query"] if isinstance(v["query"], dict) else v["query"])
    return out


def metric_names(expr: str) -> set[str]:
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # strings
    e = re.sub(r"\{[^}]*\}", "", e)                         # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                        # range selectors
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)  # label lists
    e = re.sub(r"\$\w+", "", e)                             # dashboard variables
    e = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,[^)]*\)", r"\1", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in KEYWORDS:
            continue  # a function or a keyword
        names.add(m.group(0))
    return names


def test_metric_name_extraction():
    assert metric_names('sum by (node) (rate(homelab_x_total{what="a b"}[5m]))') == {"homelab_x_total"}
    assert metric_names("time() - homelab_y{node=~\"$node\"}") == {"homelab_y"}
    assert metric_names("count(homelab_up == 0) or vector(0)") == {"homelab_up"}


def test_provisioning_files_parse():
    ds = yaml.safe_load((GRAFANA / "datasource.yml").read_text())
    uids = {d["uid"]: d["type"] for d in ds["datasources"]}
    assert uids == {"homelab-prometheus": "prometheus", "homelab-loki": "loki"}
    dash = json.loads((GRAFANA / "fleet.json").read_text())
    for p in dash["panels"]:
        assert p["datasource"]["uid"] in uids, p["title"]
    yaml.safe_load((GRAFANA / "dashboards.yml").read_text())


async def test_dashboard_queries_only_served_metric_names(hub):
    from agent.collectors.metrics import MetricsCollector
    from agent.config import load_settings as agent_settings

    # a real sample from this machine's collector, twice (rates need a previous reading)
    col = MetricsCollector(agent_settings(state_dir=hub.data_dir / "agent"), lambda e: True, None)
    col.sample()
    time.sleep(0.2)
    sample = col.sample()
    cred = await join(hub, "here")
    assert (await send(hub, cred, "here", [(1, wire.Metrics(ts=time.time(), samples=sample))]))[0] == 200

    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.get(f"{hub.url}/metrics") as r:
            text = await r.text()
    served = set()
    for fam in text_string_to_metric_families(text):
        served.add(fam.name)
        served.update(s.name for s in fam.samples)
    dash = json.loads((GRAFANA / "fleet.json").read_text())
    exprs = prometheus_exprs(dash)
    assert len(exprs) >= 10
    wanted = set().union(*(metric_names(e) for e in exprs))
    assert "homelab_cpu_percent" in wanted
    missing = sorted(wanted - served)
    assert not missing, f"dashboard queries metrics /metrics does not serve: {missing}"
