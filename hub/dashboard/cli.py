"""`homelab-hub status`: the hub's health in one screen (or one JSON object)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import click

from hub.cli import data_dir_option, domain_errors, settings_from


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    from hub.queries import ago

    return f"{datetime.fromtimestamp(ts, UTC):%Y-%m-%d %H:%M} UTC ({ago(time.time() - ts)})"


@click.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@domain_errors
def status(data_dir, as_json) -> None:
    """Hub health: running or not, nodes online, writer queue, database size and growth, last
    backup, brain, rules, version."""
    from hub.dashboard.health import status as read_status

    s = settings_from(data_dir=data_dir)
    st = read_status(s)
    if as_json:
        click.echo(json.dumps(st))
        return
    from rich.console import Console
    from rich.table import Table

    hub, nodes, brain = st["hub"], st["nodes"], st["brain"] or {}
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    if hub["running"]:
        q = hub["writer_queue"]
        t.add_row("hub", f"[green]running[/] ({hub['pid']}) at {hub['url'] or '?'}")
        t.add_row("writer queue", "unknown (/metrics did not answer)" if q is None else str(q))
    else:
        t.add_row("hub", f"[yellow]not running[/] on {st['data_dir']}")
    off = nodes["offline"]
    t.add_row("nodes", f"{nodes['online']} of {nodes['total']} online"
              + (f"; not online: {', '.join(off)}" if off else ""))
    g = st["growth_per_day"]
    grow = ", ".join(f"{_size(v)}/day over {k}" for k, v in g.items() if v is not None)
    t.add_row("database", f"{_size(st['database_bytes'])} ({st['database']})")
    t.add_row("growth", grow or "not measured yet (the running hub records the size hourly)")
    b = st["last_backup"]
    t.add_row("last backup", f"{_when(b['ts'])}, {_size(b['bytes'])}, {b['path']}" if b
              else "none in backup_dir (set backup_dir, or run `homelab-hub backup`)")
    model = brain.get("model") or "none configured"
    if brain.get("model") and not brain.get("model_present"):
        model += " [red](file missing)[/]"
    last = brain.get("last_decision")
    t.add_row("brain", f"{brain.get('state', 'not running')}; model {model}"
              + (f"; last decision {_when(last['ts'])}: {last['purpose']} {last['outcome']}" if last else ""))
    r = st["rules"]
    t.add_row("rules", f"{r['loaded']} loaded" + (f", [red]{r['file_errors']} file(s) with errors[/]"
                                                  if r["file_errors"] else ""))
    t.add_row("version", st["version"])
    Console().print(t)


COMMANDS = [status]
