"""Tables for people: Unix times as dates, JSON as indented text, secrets and job output out
of the way until asked for.

datasette-render-timestamps (1.0.1) renders integers only, and the hub stores times as REAL
seconds (1796622881.74), so this is the project's own: a number in a time column between 2000
and 2100 becomes `2026-12-07 12:21:03 UTC`, with the raw value kept as the tooltip and in the
JSON and CSV exports (render_cell changes only the HTML). Everything is escaped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from markupsafe import Markup, escape

from datasette import hookimpl
from hub.schema import SECRET_COLUMNS as SECRET_COLUMNS_BY_TABLE

TIME_COLUMNS = {
    "ts", "created", "updated", "changed", "expires", "used", "last_seen", "first_seen", "seen",
    "pending_at", "firing_at", "resolved_at", "approved_at", "approval_expires", "verify_deadline",
    "delivered", "finished", "done", "applied", "assigned", "boot_time", "checked", "date",
    "exported", "last_change", "modified", "since", "started", "stopped",
}
JSON_COLUMNS = {
    "data", "labels", "annotations", "fields", "propose", "params", "approval_params", "evidence",
    "candidates", "parsed", "facts", "context_ids", "key", "manifest", "outcome_data",
}
SECRET_COLUMNS = {column for _table, column in SECRET_COLUMNS_BY_TABLE} | {"payload"}
OUTPUT_COLUMNS = {"output", "verify_output", "raw_output", "diff", "script", "prompt"}
LO, HI = 946684800, 4102444800  # 2000-01-01 .. 2100-01-01


def when(value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not LO <= value < HI:
        return None
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@hookimpl
def render_cell(value, column, table, database, datasette):
    if column in TIME_COLUMNS or column.endswith(("_ts", "_at", "_seen")):
        text = when(value)
        if text:
            iso = datetime.fromtimestamp(value, UTC).isoformat()
            return Markup(f'<time datetime="{iso}" title="{escape(value)}">{text}</time>')
    if not isinstance(value, str) or not value:
        return None
    if column in SECRET_COLUMNS:
        # hashes and signatures: nothing a person reads; the JSON export still has them
        return Markup(f'<span class="hidden-secret" title="{len(value)} characters; see the JSON export">(set)</span>')
    if column in OUTPUT_COLUMNS and (len(value) > 120 or "\n" in value):
        lines = value.count("\n") + 1
        return Markup(f"<details><summary>{escape(column)}: {lines} line{'s' if lines != 1 else ''}, "
                      f"{len(value)} characters</summary><pre>{escape(value)}</pre></details>")
    if column in JSON_COLUMNS and value[:1] in "{[":
        try:
            data = json.loads(value)
        except ValueError:
            return None
        if not data:
            return None
        text = json.dumps(data, indent=1, ensure_ascii=False, sort_keys=isinstance(data, dict))
        if len(text) > 600:
            return Markup(f"<details><summary>{escape(value[:80])}…</summary>"
                          f'<pre class="json">{escape(text)}</pre></details>')
        return Markup(f'<pre class="json" style="white-space: pre-wrap; margin: 0">{escape(text)}</pre>')
    return None
