"""/metrics host series: the hub's own renderer writes exactly the text prometheus_client
writes for the same families (it replaced it for speed), hostile names and labels included."""

from __future__ import annotations

import math

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest

from hub.metrics.web import LATEST, OWN_PREFIXES, FleetCollector, metric_name, parse_labels
from hub.project import split_key


def reference(latest: dict, fresh: set[str]) -> str:
    """The families as the hub built them with prometheus_client before."""
    families: dict[str, GaugeMetricFamily] = {}
    for (node, key), value in latest.items():
        if node not in fresh:
            continue
        name, labels = split_key(key)
        mname = metric_name(name)
        if mname.startswith(OWN_PREFIXES):
            continue
        fam = families.get(mname)
        if fam is None:
            fam = families[mname] = GaugeMetricFamily(mname, f"Host metric {name!r} as reported by the agent.")
        lab = parse_labels(labels)
        lab["node"] = node
        fam.add_sample(mname, lab, value)

    class C:
        def collect(self):
            return list(families.values())

    reg = CollectorRegistry(auto_describe=False)
    reg.register(C())
    return generate_latest(reg).decode()


def test_host_text_is_what_prometheus_client_writes():
    latest = {
        ("nas", "cpu_percent"): 12.5,
        ("nas", 'disk_used_ratio{mount="/"}'): 0.5,
        ("pi", 'disk_used_ratio{mount="/srv",device="/dev/sda1"}'): 1e-9,
        ("pi", "cpu_percent"): math.inf,
        ("pi", "load1"): math.nan,
        ("pi", "big"): 1.5e300,
        ("nas", 'temp{chip="a\\"b",sensor="Core\\\\0"}'): -3.0,
        ("nas", 'weird{node="fake",job="x",__name__="y",1st="z"}'): 2.0,
        ("nas", "node_up"): 7.0,  # would shadow homelab_node_up: dropped
        ("nas", "bad-name.with:chars"): 4.0,
        ("nas", 'uni{label="ümlaut ☃"}'): 5.0,
        ("gone", "cpu_percent"): 99.0,  # offline node: not exported
        ("nas", 'torn{a="1"'): 6.0,
        ("nas", 'help\\nname'): 8.0,
    }
    app = web.Application()
    app[LATEST] = dict(latest)
    fleet = FleetCollector(app, None)
    fleet.fresh = {"nas", "pi"}
    assert fleet.host_text() == reference(latest, fleet.fresh)
    # the cached series lines follow new values, and new series
    app[LATEST][("nas", "cpu_percent")] = 13.0
    app[LATEST][("pi", "new_one")] = 1.0
    latest2 = dict(app[LATEST])
    assert fleet.host_text() == reference(latest2, fleet.fresh)
    assert 'homelab_cpu_percent{node="nas"} 13.0' in fleet.host_text()
    assert "homelab_node_up" not in fleet.host_text()
