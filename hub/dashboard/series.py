"""A node's metric history for a time range, read from the tier that fits the range.

Raw samples live for ``raw_retention`` (a day), 1-minute aggregates for ``minute_retention``
(a week), 1-hour aggregates for ``hour_retention``. A range is read from the finest tier that
still holds its start; the part of the range newer than that tier's rollup watermark (not yet
aggregated) is read from the finer tiers, so the right edge of a 30-day chart is as fresh as
the last sample. Points are averaged into at most ``MAX_POINTS`` buckets per series: a browser
draws 700 points per line as well as 40,000, and the JSON stays small.
"""

from __future__ import annotations

import math
import re
import sqlite3
from dataclasses import dataclass

from hub.errors import BadRequest

RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400,
          "1y": 365 * 86400}
MAX_POINTS = 800
TIERS = (("samples", 1), ("samples_1m", 60), ("samples_1h", 3600))  # finest first


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    unit: str  # "%", "B/s", "", "°C"
    names: tuple[str, ...]
    scale: float = 1.0  # ratios are stored 0..1 and drawn as percent


CHARTS = (
    Chart("cpu", "CPU", "%", ("cpu_percent",)),
    Chart("memory", "Memory and swap", "%", ("memory_used_ratio", "swap_used_ratio"), 100.0),
    Chart("disk", "Disk use per mount", "%", ("disk_used_ratio",), 100.0),
    Chart("load", "Load", "", ("load1", "load5", "load15")),
    Chart("net", "Network", "B/s", ("net_receive_bytes_per_second", "net_transmit_bytes_per_second")),
    Chart("diskio", "Disk I/O", "B/s", ("disk_read_bytes_per_second", "disk_write_bytes_per_second")),
    Chart("temp", "Temperatures", "°C", ("temperature_celsius",)),
)
CHART_OF = {n: c for c in CHARTS for n in c.names}
_LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_range(raw: str | None, now: float, frm: str | None = None, to: str | None = None) -> tuple[float, float]:
    """?range=30d, or ?from=&to= (Unix seconds, a zoomed selection). Errors name the parameter."""
    if frm or to:
        try:
            start, end = float(frm or ""), float(to or "")
        except ValueError:
            raise BadRequest(f"from and to must be Unix seconds, got from={frm!r} to={to!r}") from None
        if not 0 <= start < end:
            raise BadRequest("from must be before to (both Unix seconds)")
        if end - start > RANGES["1y"] * 2:
            raise BadRequest("a range can span at most two years")
        return start, end
    key = raw or "24h"
    if key not in RANGES:
        raise BadRequest(f"range must be one of {', '.join(RANGES)}, got {key[:20]!r}")
    return now - RANGES[key], now


def pick_tier(start: float, end: float, now: float, settings) -> int:
    """Index into TIERS: raw up to 6 h, 1-minute up to a week, hourly beyond; coarser when the
    finer tier's retention no longer reaches back to `start`."""
    keep = (settings.raw_retention, settings.minute_retention, settings.hour_retention)
    span = end - start
    for i, longest in enumerate((6 * 3600, 7 * 86400)):
        if span <= longest and start >= now - keep[i] - 60:
            return i
    return len(TIERS) - 1


def _watermarks(db: sqlite3.Connection) -> dict[str, int]:
    return {r[0]: r[1] for r in db.execute("SELECT target, done FROM rollup_state")}


def label_text(labels: str) -> str:
    """'mount="/srv"' -> '/srv'; 'chip="k10temp",sensor="Tctl"' -> 'k10temp Tctl'."""
    return " ".join(v for _k, v in _LABEL_RE.findall(labels)) or labels


def node_series(db: sqlite3.Connection, node: str, start: float, end: float, now: float,
                settings) -> dict:
    """The charts for one node over [start, end]: one shared time axis (uPlot's aligned data),
    a list of lines per chart, the tier read and the bucket width."""
    tier = pick_tier(start, end, now, settings)
    width = TIERS[tier][1]
    bucket = max(1, math.ceil((end - start) / MAX_POINTS / width)) * width
    series = {r["id"]: r for r in db.execute(
        "SELECT id, name, labels FROM series WHERE node = ? ORDER BY name, labels", (node,))
        if r["name"] in CHART_OF}
    marks = _watermarks(db)
    # Coarsest tier first, each covering up to its watermark; finer tiers fill in the rest.
    bounds, lo = [], int(start)
    for i in range(tier, -1, -1):
        table = TIERS[i][0]
        hi = int(end) + 1 if i == 0 else min(int(end) + 1, marks.get(table, 0))
        if hi > lo:
            bounds.append((table, lo, hi))
            lo = hi
    points: dict[int, dict[int, float]] = {sid: {} for sid in series}
    ids = ",".join(str(s) for s in series)  # integers from our own table: safe to inline
    widths = dict(TIERS)
    # Scaling and rounding in SQLite's C, not per point in Python (46,000 round() calls were
    # a third of a 30-day answer).
    pct = ",".join(str(s) for s, r in series.items() if CHART_OF[r["name"]].scale != 1.0)
    scale = f" * CASE WHEN series IN ({pct}) THEN 100.0 ELSE 1.0 END" if pct else ""
    cur = db.cursor()
    cur.row_factory = None  # plain tuples: a sqlite3.Row per point was a fifth of the Python time
    for table, lo, hi in bounds if ids else ():
        col = "value" if table == "samples" else "avg"
        if widths[table] == bucket:  # rows are buckets already: no GROUP BY (a temp b-tree)
            sql = (f"SELECT series, ts, round({col}{scale}, 4) FROM {table}"
                   f" WHERE series IN ({ids}) AND ts >= ? AND ts < ?")
        else:
            sql = (f"SELECT series, ts / {bucket} * {bucket} AS b, round(avg({col}){scale}, 4)"
                   f" FROM {table} WHERE series IN ({ids}) AND ts >= ? AND ts < ? GROUP BY series, b")
        for sid, b, v in cur.execute(sql, (lo, hi)):
            points[sid][b] = v
    xs = sorted({b for p in points.values() for b in p})
    index = {x: i for i, x in enumerate(xs)}
    charts = []
    for c in CHARTS:
        lines = []
        mine = sorted((s for s in series.values() if s["name"] in c.names),
                      key=lambda s: (c.names.index(s["name"]), s["labels"]))
        for s in mine:
            sid = s["id"]
            if not points[sid]:
                continue
            p = points[sid]
            label = s["name"] if len(c.names) > 1 else ""
            extra = label_text(s["labels"])
            values: list[float | None]
            if len(p) == len(xs):  # every bucket, in time order (tiers come oldest first, rows in key order)
                values = list(p.values())
            else:
                values = [None] * len(xs)
                for b, v in p.items():
                    values[index[b]] = v
            lines.append({"label": " ".join(x for x in (_short(label), extra) if x) or c.title,
                          "values": values})
        if lines:
            charts.append({"id": c.id, "title": c.title, "unit": c.unit, "lines": lines})
    return {"node": node, "start": start, "end": end, "tier": TIERS[tier][0], "bucket": bucket,
            "ts": xs, "charts": charts}


def _short(name: str) -> str:
    for suffix, short in (("_bytes_per_second", ""), ("_used_ratio", ""), ("_percent", "")):
        if name.endswith(suffix):
            return name[: -len(suffix)].replace("_", " ") + short
    return name.replace("_", " ")


def time_marks(db: sqlite3.Connection, node: str, start: float, end: float, limit: int = 200) -> list[dict]:
    """The node's alerts and changes in the range, for marks on the charts' time axis."""
    out = [{"ts": r[0], "kind": "alert", "text": f"{r[1]} ({r[2]}): {r[3] or ''}".strip()}
           for r in db.execute(
               "SELECT coalesce(firing_at, first_seen), rule, severity, summary FROM alerts"
               " WHERE node = ? AND coalesce(firing_at, first_seen) BETWEEN ? AND ?"
               " ORDER BY 1 DESC LIMIT ?", (node, start, end, limit))]
    out += [{"ts": r[0], "kind": r[1], "text": f"{r[1]} {r[2]}: {r[3]}"}
            for r in db.execute(
                "SELECT ts, kind, action, subject FROM changes WHERE node = ? AND ts BETWEEN ? AND ?"
                " ORDER BY ts DESC LIMIT ?", (node, start, end, limit))]
    return sorted(out, key=lambda m: m["ts"])
