"""``GET /metrics``: the fleet and the hub itself in Prometheus exposition format.

Host metrics are the latest sample of every series, kept in a small in-memory table fed by
a commit subscriber (seeded from the database at start), so a scrape costs a dictionary walk
rather than a query over ``samples``. Node state, alerts and proposals are read at scrape
time from a read-only connection: those are a few rows each.

Every host series is exported as ``homelab_<name>`` with a ``node`` label plus the series'
own labels (``homelab_disk_used_ratio{node="nas",mount="/"}``). A node silent for longer
than ``offline_after`` disappears from the host series (so dashboards do not show a
frozen value as current) but keeps ``homelab_node_up 0``.

/metrics is served on the hub's listen address (the tailnet or loopback). When
``metrics_token`` is set, a scrape must present it as a bearer token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from agent import wire
from hub.brain import worker_state
from hub.config import db_path
from hub.keys import CRED_CACHE, SETTINGS, STATS, WRITER
from hub.project import MAX_SERIES_PER_NODE, split_key
from hub.store import connect

log = logging.getLogger(__name__)

LATEST = web.AppKey("metrics_latest", dict)
BACKLOG = web.AppKey("metrics_spool_backlog", dict)
REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)

BACKLOG_HEADER = "Homelab-Spool-Backlog"
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")
_PAIR = re.compile(r'\s*([^=\s,]+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
RESERVED = {"node", "job", "instance", "__name__"}
OWN_PREFIXES = ("homelab_node_", "homelab_hub_", "homelab_alerts", "homelab_proposals", "homelab_check_",
                "homelab_notify_")


def metric_name(name: str) -> str:
    n = _NAME_BAD.sub("_", name)
    return "homelab_" + n


def parse_labels(labels: str) -> dict[str, str]:
    """'mount="/",iface="eth0"' -> {'mount': '/', 'iface': 'eth0'}; label names sanitised,
    names Prometheus or we reserve get an ``exported_`` prefix (Prometheus's own convention)."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(labels):
        m = _PAIR.match(labels, pos)
        if not m:
            break
        key = _LABEL_BAD.sub("_", m.group(1))
        if key[:1].isdigit():
            key = "_" + key
        if key in RESERVED or key.startswith("__"):
            key = "exported_" + key.lstrip("_")
        out[key] = re.sub(r"\\(.)", r"\1", m.group(2))
        pos = m.end()
    return out


def _table_columns(db: sqlite3.Connection, table: str) -> set[str]:
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type IN ('table','view') AND name = ?", (table,)).fetchone():
        return set()
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}


class FleetCollector:
    """A prometheus_client custom collector; ``collect`` runs in an executor thread."""

    def __init__(self, app: web.Application, db: sqlite3.Connection):
        self.app = app
        self.db = db
        self.lock = threading.Lock()
        self.fresh: set[str] = set()
        self.render_lock = threading.Lock()
        self._lines: dict[tuple[str, str], tuple[str, str, str] | None] = {}

    def describe(self) -> list:
        return []  # unknown until scraped: series come from the fleet

    def collect(self) -> list[Metric]:
        with self.lock:
            return list(self._collect())

    def _collect(self):
        app = self.app
        settings = app[SETTINGS]
        now = time.time()
        nodes = self.db.execute(
            "SELECT name, last_seen, clock_skew, last_seq FROM nodes ORDER BY name"
        ).fetchall()
        up = GaugeMetricFamily("homelab_node_up", "1 if the node was heard from within offline_after.", labels=["node"])
        seen = GaugeMetricFamily("homelab_node_last_seen_timestamp_seconds", "When the hub last heard from the node (hub clock).", labels=["node"])
        skew = GaugeMetricFamily("homelab_node_clock_skew_seconds", "Node clock minus hub clock at the last request.", labels=["node"])
        seq = GaugeMetricFamily("homelab_node_last_seq", "Highest event sequence committed for the node.", labels=["node"])
        fresh_nodes = set()
        for name, last_seen, clock_skew, last_seq in nodes:
            alive = last_seen is not None and now - last_seen <= settings.offline_after
            if alive:
                fresh_nodes.add(name)
            up.add_metric([name], 1.0 if alive else 0.0)
            if last_seen is not None:
                seen.add_metric([name], last_seen)
            if clock_skew is not None:
                skew.add_metric([name], clock_skew)
            seq.add_metric([name], last_seq)
        yield from (up, seen, skew, seq)

        backlog = GaugeMetricFamily("homelab_node_spool_backlog_events", "Events waiting in the node's spool, as the agent last reported.", labels=["node"])
        for node, n in sorted(app[BACKLOG].items()):
            backlog.add_metric([node], n)
        yield backlog
        refused = CounterMetricFamily(
            "homelab_node_series_refused", f"Samples of new series past the bound of {MAX_SERIES_PER_NODE} per node"
            " (kept in events, not in samples), since the hub started.", labels=["node"])
        for node, n in sorted(dict(app[WRITER].projector.series_refused).items()):
            refused.add_metric([node], n)
        yield refused

        self.fresh = fresh_nodes  # the host series of these nodes follow (host_text)

        w = app[WRITER]
        hub_events = CounterMetricFamily("homelab_hub_ingest", "Pipeline counters of the hub's writer.", labels=["what"])
        for k in ("batches", "events", "duplicates", "commits", "failed_commits"):
            hub_events.add_metric([k], w.stats.get(k, 0))
        yield hub_events
        yield GaugeMetricFamily("homelab_hub_writer_queue_depth", "Jobs and batches waiting for the writer thread.", value=w.depth)
        workers = worker_state()
        yield GaugeMetricFamily("homelab_brain_worker_up", "1 while the model's worker process runs (it starts with the hub, or at the first decision with brain_warm off).",
                                value=sum(1 for s in workers if s["pid"]))
        yield CounterMetricFamily("homelab_brain_worker_starts", "Model worker processes started.",
                                  value=sum(s["starts"] for s in workers))
        yield CounterMetricFamily("homelab_brain_worker_failures", "Model workers that crashed, hung or could not load (each cost one decision).",
                                  value=sum(s["failures"] for s in workers))
        req = CounterMetricFamily("homelab_hub_requests", "Hub request counters (rejections by HTTP status, joins, unknown kinds, Loki).", labels=["what"])
        for k, v in sorted(app[STATS].items()):
            req.add_metric([k], v)
        yield req
        size = 0
        base = db_path(settings.data_dir)
        for suffix in ("", "-wal", "-shm"):
            try:
                size += os.stat(f"{base}{suffix}").st_size
            except FileNotFoundError:
                pass
        yield GaugeMetricFamily("homelab_hub_database_bytes", "Size of homelab.db with its WAL.", value=size)
        yield from self._by_state("alerts", "homelab_alerts", "Alerts by state.")
        yield from self._by_state("proposals", "homelab_proposals", "Proposals by state.")
        yield from self._by_state("notify_outbox", "homelab_notify_outbox", "Notifications by state (docs/notify.md).")
        yield from self._checks()

    def _checks(self):
        """Active checks (docs/checks.md), as blackbox_exporter's probe_success and duration."""
        labels = ["node", "check", "type"]
        ok = GaugeMetricFamily("homelab_check_up", "1 if the active check's last run succeeded.", labels=labels)
        ms = GaugeMetricFamily("homelab_check_latency_ms", "Latency of the check's last run.", labels=labels)
        days = GaugeMetricFamily("homelab_check_cert_days", "Days until the certificate the check saw expires.", labels=labels)
        if _table_columns(self.db, "checks"):
            for node, name, kind, up, latency, cert_days in self.db.execute(
                    "SELECT node, name, type, ok, latency_ms, cert_days FROM checks ORDER BY node, name"):
                ok.add_metric([node, name, kind], up)
                if latency is not None:
                    ms.add_metric([node, name, kind], latency)
                if cert_days is not None:
                    days.add_metric([node, name, kind], cert_days)
        yield from (ok, ms, days)

    def host_text(self) -> str:
        """The host series in exposition format, one family per metric name (label sets may
        differ between series). Rendered here rather than through prometheus_client: its
        per-sample objects, label sorting and escaping cost ~30 us a series, 17,000 series
        half a second of hub CPU per scrape (bench fleet). A series' name and labels never
        change, so its line up to the value is built once and kept (tests/hub/test_metrics_text.py
        checks the text is exactly what prometheus_client renders)."""
        latest, lines, fresh = self.app[LATEST], self._lines, self.fresh
        if len(lines) > 2 * len(latest) + 1000:  # series gone from LATEST: drop their lines
            lines.clear()
        fams: dict[str, list[str]] = {}
        helps: dict[str, str] = {}
        for (node, key), value in list(latest.items()):
            if node not in fresh:
                continue
            try:
                hit = lines[(node, key)]
            except KeyError:
                hit = lines[(node, key)] = _series_line(node, key)
            if hit is None:
                continue
            mname, name, prefix = hit
            fam = fams.get(mname)
            if fam is None:
                fam = fams[mname] = []
                helps[mname] = name
            fam.append(f"{prefix}{floatToGoString(value)}\n")
        out = []
        for mname, samples in fams.items():
            doc = f"Host metric {helps[mname]!r} as reported by the agent.".replace("\\", r"\\").replace("\n", r"\n")
            out.append(f"# HELP {mname} {doc}\n# TYPE {mname} gauge\n")
            out.extend(samples)
        return "".join(out)

    def _by_state(self, table: str, name: str, doc: str):
        cols = _table_columns(self.db, table)
        col = "state" if "state" in cols else "status" if "status" in cols else None
        fam = GaugeMetricFamily(name, doc, labels=["state"])
        if col:
            for state, n in self.db.execute(f"SELECT {col}, count(*) FROM {table} GROUP BY {col}"):
                fam.add_metric([str(state)], n)
        yield fam


def _escape(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


FLEET = web.AppKey("metrics_fleet", FleetCollector)


def _series_line(node: str, key: str) -> tuple[str, str, str] | None:
    """(family, original name, 'family{labels} ') for a host series; None if it would
    shadow one of the hub's own families (one name, one family)."""
    name, labels = split_key(key)
    mname = metric_name(name)
    if mname.startswith(OWN_PREFIXES):
        return None
    lab = parse_labels(labels)
    lab["node"] = node
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(lab.items()))
    return mname, name, f"{mname}{{{inner}}} "


def _subscriber(latest: dict):
    """Runs in the writer thread after each commit: keep the newest sample per series."""

    per_node: dict[str, int] = {}
    for node, _key in latest:
        per_node[node] = per_node.get(node, 0) + 1

    def on_commit(events) -> None:
        for c in events:
            ev = c.event
            if isinstance(ev, wire.Metrics):
                node = c.node
                for key, value in ev.samples.items():
                    if (node, key) not in latest:  # the same bound the projector keeps
                        if per_node.get(node, 0) >= MAX_SERIES_PER_NODE:
                            continue
                        per_node[node] = per_node.get(node, 0) + 1
                    latest[(node, key)] = value

    return on_commit


def _seed(db: sqlite3.Connection, latest: dict) -> None:
    # Newest raw sample per series; one index seek each (samples' key is (series, ts)).
    for node, key, value in db.execute(
        "SELECT s.node, s.key, (SELECT value FROM samples WHERE series = s.id ORDER BY ts DESC LIMIT 1)"
        " FROM series s"
    ):
        if value is not None:
            latest[(node, key)] = value


async def _context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    db = connect(db_path(settings.data_dir), readonly=True)
    _seed(db, app[LATEST])
    app[WRITER].subscribers.append(_subscriber(app[LATEST]))
    registry = CollectorRegistry(auto_describe=False)
    fleet = FleetCollector(app, db)
    registry.register(fleet)
    app[REGISTRY] = registry
    app[FLEET] = fleet
    yield
    db.close()


async def metrics(request: web.Request) -> web.Response:
    token = request.app[SETTINGS].metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), f"Bearer {token}".encode()):
            return web.json_response({"error": "/metrics needs 'Authorization: Bearer <metrics_token>'"}, status=401)
    registry, fleet = request.app[REGISTRY], request.app[FLEET]

    def render() -> bytes:
        with fleet.render_lock:  # the host lines follow the node set of this very collect
            return generate_latest(registry) + fleet.host_text().encode()

    body = await asyncio.get_running_loop().run_in_executor(None, render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def backlog_middleware(request: web.Request, handler: Any):
    """Agents report their spool backlog in a header; remember it per node after a good ingest."""
    resp = await handler(request)
    if request.path == "/v1/ingest" and resp.status == 200:
        raw = request.headers.get(BACKLOG_HEADER)
        auth = request.headers.get("Authorization", "")
        hit = request.app[CRED_CACHE].get(auth[7:].strip()) if raw else None
        if hit and raw and raw.isdigit():
            request.app[BACKLOG][hit[0]] = int(raw)
    return resp


def setup(app: web.Application) -> None:
    app[LATEST] = {}
    app[BACKLOG] = {}
    app.router.add_get("/metrics", metrics)
    app.middlewares.append(backlog_middleware)
    app.cleanup_ctx.append(_context)
