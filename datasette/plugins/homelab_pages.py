"""Datasette pages for the homelab: a fleet dashboard and one search box over everything.

Charts are drawn here as inline SVG from SQL, so the pages work offline (no JavaScript
or chart library fetched from a CDN) and render in any browser, including a headless one.
"""

from __future__ import annotations

import html
import time

from datasette.utils.asgi import Response

from datasette import hookimpl

DB = "homelab"
HOURS = 24
BUCKET = 600  # seconds per chart point
PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f"]

# (title, metric, the point of a node in a bucket, y axis top). Each row below carries
# total (sum of values), n (their count) and top (their largest) for its series and bucket.
CHARTS = [
    ("CPU %", "cpu_percent", "sum(total) / sum(n)", 100.0),
    ("Memory used %", "memory_used_ratio", "sum(total) / sum(n) * 100", 100.0),
    ("Fullest disk %", "disk_used_ratio", "max(top) * 100", 100.0),  # the peak of its fullest mount
    ("Load (1 min)", "load1", "sum(total) / sum(n)", None),
]

# A day of 10-minute points, read from the 10-minute rollup (rows that are buckets already) up
# to its watermark, then the 1-minute rollup, then raw samples: the right edge is the last
# sample. Series first (CROSS JOIN fixes the order): a few series, then a key range each.
# Grouping 14,400 one-minute rows per chart on every view was most of the page's time.
CHART_SQL = f"""
WITH w AS (SELECT coalesce((SELECT done FROM rollup_state WHERE target = 'samples_1m'), 0) AS m1,
                  coalesce((SELECT done FROM rollup_state WHERE target = 'samples_10m'), 0) AS m10)
SELECT node, b, {{point}} AS v FROM (
  SELECT s.node, p.ts AS b, p.avg * p.n AS total, p.n, p.max AS top
    FROM w, series s CROSS JOIN samples_10m p ON p.series = s.id
   WHERE s.name = :name AND p.ts >= :t0 AND p.ts < min(w.m10, w.m1)
  UNION ALL
  SELECT s.node, p.ts / {BUCKET} * {BUCKET}, p.avg * p.n, p.n, p.max
    FROM w, series s CROSS JOIN samples_1m p ON p.series = s.id
   WHERE s.name = :name AND p.ts >= max(:t0, min(w.m10, w.m1)) AND p.ts < w.m1
  UNION ALL
  SELECT s.node, p.ts / {BUCKET} * {BUCKET}, p.value, 1, p.value
    FROM w, series s CROSS JOIN samples p ON p.series = s.id
   WHERE s.name = :name AND p.ts >= max(:t0, w.m1)
) GROUP BY node, b ORDER BY node, b"""

# Sources searched by /-/search, used only when their table exists. Logs and commands come
# newest first: FTS5 walks rowids in order, where ranking every match of a common word in
# millions of log lines would not answer in time. Files: the last 30 days.
SEARCHES = [
    ("knowledge base", "kb_passages_fts",
     "SELECT 'knowledge base' AS source, d.title AS title, snippet(kb_passages_fts, -1, '[', ']', '…', 12) AS snippet,"
     " '/homelab/kb_documents/' || d.id AS link, NULL AS node, d.updated AS ts"
     " FROM kb_passages_fts JOIN kb_passages p ON p.id = kb_passages_fts.rowid JOIN kb_documents d ON d.id = p.document_id"
     " WHERE kb_passages_fts MATCH :q ORDER BY rank LIMIT 20"),
    ("commands", "commands_fts",
     "SELECT 'commands' AS source, c.user || '@' || c.node AS title, snippet(commands_fts, -1, '[', ']', '…', 12) AS snippet,"
     " '/homelab/commands/' || c.id AS link, c.node AS node, c.ts AS ts"
     " FROM commands_fts JOIN commands c ON c.id = commands_fts.rowid WHERE commands_fts MATCH :q"
     " ORDER BY commands_fts.rowid DESC LIMIT 20"),
    ("logs", "logs_fts",
     "SELECT 'logs' AS source, coalesce(l.program, l.source) || '@' || l.node AS title,"
     " snippet(logs_fts, -1, '[', ']', '…', 12) AS snippet, '/homelab/logs/' || l.id AS link, l.node AS node, l.ts AS ts"
     " FROM logs_fts JOIN logs l ON l.id = logs_fts.rowid WHERE logs_fts MATCH :q"
     " ORDER BY logs_fts.rowid DESC LIMIT 20"),
    ("files", "file_changes",
     "SELECT 'files' AS source, path AS title, action || ' ' || coalesce(substr(diff, 1, 200), '') AS snippet,"
     " '/homelab/file_changes/' || id AS link, node, ts"
     " FROM file_changes WHERE ts > strftime('%s', 'now') - 30 * 86400"
     " AND (path LIKE '%' || :q || '%' OR diff LIKE '%' || :q || '%') ORDER BY ts DESC LIMIT 20"),
]


def svg_chart(title: str, series: dict[str, list[tuple[float, float]]], t0: float, t1: float, ymax: float | None) -> str:
    w, h, pad = 560, 180, 34
    values = [v for pts in series.values() for _, v in pts]
    top = ymax or (max(values) * 1.1 if values else 1.0) or 1.0
    parts = [f'<svg class="chart" role="img" aria-label="{html.escape(title)}" viewBox="0 0 {w} {h}" width="{w}" height="{h}">',
             f'<text x="{pad}" y="14" class="chart-title">{html.escape(title)}</text>',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - 6}" y2="{h - pad}" stroke="#999"/>',
             f'<line x1="{pad}" y1="22" x2="{pad}" y2="{h - pad}" stroke="#999"/>',
             f'<text x="2" y="28" font-size="10">{top:.0f}</text><text x="2" y="{h - pad}" font-size="10">0</text>',
             f'<text x="{pad}" y="{h - 18}" font-size="10">-{HOURS}h</text><text x="{w - 30}" y="{h - 18}" font-size="10">now</text>']
    xk, yk, y0 = (w - pad - 6) / max(t1 - t0, 1), (h - pad - 22) / top, h - pad
    for i, (node, pts) in enumerate(sorted(series.items())):
        color = PALETTE[i % len(PALETTE)]
        # ~6,000 points a page: constants hoisted, a list for join (a quarter of the drawing)
        coords = " ".join([f"{pad + (t - t0) * xk:.1f},{y0 - (v if v < top else top) * yk:.1f}" for t, v in pts])
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"><title>{html.escape(node)}</title></polyline>')
        parts.append(f'<text x="{w - 150}" y="{30 + 12 * i}" font-size="11" fill="{color}" class="legend">{html.escape(node)}</text>')
    if not values:
        parts.append(f'<text x="{w / 2 - 40}" y="{h / 2}" font-size="12" fill="#666">no data yet</text>')
    parts.append("</svg>")
    return "".join(parts)


async def dashboard(datasette, request):
    db = datasette.get_database(DB)
    t1 = time.time()
    t0 = (t1 - HOURS * 3600) // BUCKET * BUCKET  # whole buckets

    def read(conn):
        # Every read in one trip to Datasette's thread (seven hand-offs between the loop and
        # the thread were a fifth of the page on a busy machine), rows as plain tuples.
        cur = conn.cursor()
        cur.row_factory = None
        charts = []
        for title, name, point, ymax in CHARTS:
            series: dict[str, list[tuple[float, float]]] = {}
            for node, b, v in cur.execute(CHART_SQL.format(point=point), {"name": name, "t0": int(t0)}):
                series.setdefault(node, []).append((b, v))
            charts.append(svg_chart(title, series, t0, t1, ymax))
        nodes = [{"name": r[0], "last_seen": r[1], "clock_skew": r[2]}
                 for r in cur.execute("SELECT name, last_seen, clock_skew FROM nodes ORDER BY name")]
        tables = {r[0] for r in cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

        def count(table: str, where: str) -> int | None:
            return cur.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0] if table in tables else None

        return {"charts": charts, "nodes": nodes, "open_alerts": count("alerts", "state = 'firing'"),
                "open_proposals": count("proposals", "state = 'proposed'")}

    data = await db.execute_fn(read)
    return Response.html(await datasette.render_template("homelab_dashboard.html", {
        **data, "now": t1, "hours": HOURS}, request=request))


async def search(datasette, request):
    q = request.args.get("q", "").strip()[:200]
    db = datasette.get_database(DB)
    results, errors = [], []
    if q:
        fts_q = " ".join('"' + t.replace('"', "") + '"' for t in q.split())  # terms, not FTS syntax
        for label, table, sql in SEARCHES:
            if not await db.table_exists(table):
                continue
            try:
                rows = await db.execute(sql, {"q": fts_q if table.endswith("_fts") else q})
            except Exception as e:  # noqa: BLE001 - one broken source must not hide the others
                errors.append(f"{label}: {e}")
                continue
            results += [dict(r) for r in rows]
    return Response.html(await datasette.render_template("homelab_search.html", {
        "q": q, "results": results, "errors": errors}, request=request))


@hookimpl
def register_routes():
    return [(r"^/-/dashboard$", dashboard), (r"^/-/search$", search)]


@hookimpl
def menu_links(datasette, actor):
    return [{"href": datasette.urls.path("/-/dashboard"), "label": "Fleet dashboard"},
            {"href": datasette.urls.path("/-/search"), "label": "Search everything"}]


@hookimpl
def extra_template_vars(template, datasette):
    out = {"homelab_time": lambda ts: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "never"}
    if template != "index.html":
        return out

    async def index_vars():
        # The hub's own pages (its address comes from `homelab-hub up` / `datasette`, which
        # start this process), the nodes and the stored queries, linked from the home page.
        import os

        db = datasette.get_database(DB)
        nodes = [r[0] for r in await db.execute("SELECT name FROM nodes ORDER BY name LIMIT 200")]
        queries = await datasette.get_canned_queries(DB, None)
        return {**out, "homelab_hub_url": os.environ.get("HOMELAB_HUB_URL", "").rstrip("/") or None,
                "homelab_nodes": nodes,
                "homelab_queries": [(k, q.get("title") or k) for k, q in queries.items()]}

    return index_vars
