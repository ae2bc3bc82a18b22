"""`homelab-hub twin NODE` (a node's current state) and `homelab-hub changes NODE --since 1d`
(what changed: packages, files, services, devices, as one timeline).

Both read the twin tables on a read-only connection, so they are safe while the hub runs.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.markup import escape

from agent.settings import parse_duration
from hub.cli import data_dir_option, domain_errors, settings_from
from hub.config import db_path
from hub.errors import BadRequest, NotFound
from hub.store import connect
from hub.twin.read import CHANGE_KINDS, Twin
from hub.twin.read import changes as read_changes


def _open(data_dir) -> sqlite3.Connection:
    path = db_path(settings_from(data_dir=data_dir).data_dir)
    if not Path(path).exists():
        raise NotFound(f"no hub database at {path} (run `homelab-hub serve` or pass --data-dir)")
    return connect(path, readonly=True)


def parse_since(value: str, now: float | None = None) -> float:
    """'1d', '90m', '2h' (ago), or an ISO date/time ('2026-11-25', '2026-11-25T10:00', UTC unless
    it names a zone) -> Unix seconds."""
    now = time.time() if now is None else now
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(
            f"--since: expected a duration such as 1d, 12h, 30m or an ISO date such as 2026-11-25, got {value!r}"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _size(n) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _when(ts) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _render_twin(state: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from hub.cli import table

    con = Console()
    inv = state["inventory"]
    con.rule(f"[bold]{state['node']}")
    if inv:
        facts = inv["facts"]
        t = Table(show_header=False, box=None)
        for k, v in (("hostname", inv["hostname"]), ("os", inv["os"]), ("kernel", inv["kernel"]),
                     ("arch", inv["arch"]), ("cpu", f"{inv['cpu_model'] or '?'} x{inv['cpu_count'] or '?'}"),
                     ("memory", _size(inv["memory_bytes"])), ("swap", _size(inv["swap_bytes"])),
                     ("booted", _when(inv["boot_time"])), ("primary ip", inv["primary_ip"]),
                     ("tailscale ip", inv["tailscale_ip"]), ("virtualization", facts.get("virtualization")),
                     ("inventory updated", _when(inv["updated"]))):
            if v:
                t.add_row(f"[bold]{k}", str(v))
        con.print(t)
    else:
        con.print("[yellow]no inventory received yet")
    if state["interfaces"]:
        t = table("interface", "up", "mac", "mtu", "addresses", title="Interfaces")
        for i in state["interfaces"]:
            t.add_row(i["name"], "yes" if i["up"] else "no", i["mac"] or "", str(i["mtu"] or ""), i["addresses"] or "")
        con.print(t)
    if state["mounts"]:
        t = table("mount", "device", "type", "size", title="Mounts")
        for m in state["mounts"]:
            t.add_row(m["mountpoint"], m["device"] or "", m["fstype"] or "", _size(m["total_bytes"]))
        con.print(t)
    pk = state["packages"]
    con.print(f"[bold]Packages:[/] {pk['installed']} installed ({pk['manual']} manual), {pk['removed']} removed")
    if pk["recent"]:
        t = table("time (UTC)", "action", "package", "version", "by", title="Latest package changes")
        for p in pk["recent"]:
            versions = " -> ".join(v for v in (p["old_version"], p["version"]) if v)
            t.add_row(_when(p["ts"]), p["action"], p["name"] + (f":{p['arch']}" if p["arch"] else ""), versions,
                      p["user"] or "")
        con.print(t)
    pend, counts = state["pending_updates"], state["pending_counts"]
    if pend:
        shown = "" if len(pend) == counts["total"] else f", {len(pend)} shown"
        t = table("package", "current", "candidate", "security",
                  title=f"Pending updates: {counts['total']} ({counts['security']} security{shown})")
        for u in pend:
            t.add_row(u["name"], u["current"] or "", u["candidate"] or "", "[red]yes[/]" if u["security"] else "")
        con.print(t)
    if state["services"]:
        failed = [s for s in state["services"] if s["active"] == "failed"]
        t = table("unit", "active", "sub", "result", "restarts", title=f"Services: {len(state['services'])} ({len(failed)} failed)")
        for s in state["services"]:
            color = {"failed": "red", "active": "green"}.get(s["active"], "yellow")
            t.add_row(s["unit"], f"[{color}]{s['active']}[/]", s["sub"] or "", s["result"] or "", str(s["restarts"] or 0))
        con.print(t)
    else:
        con.print("[bold]Services:[/] none reported (no systemd on this node, or the collector is off)")
    if state["devices"]:
        t = table("subsystem", "device", "node", "vendor / model", "driver", title=f"Devices present: {len(state['devices'])}")
        for d in state["devices"]:
            t.add_row(d["subsystem"], d["sys_path"], d["dev_node"] or "",
                      " ".join(x for x in (d["vendor"], d["model"]) if x), d["driver"] or "")
        con.print(t)
    if state["processes"]:
        t = table("pid", "name", "user", "cpu %", "rss", title=f"Top processes at {_when(state['processes'][0]['ts'])}")
        for p in state["processes"]:
            t.add_row(str(p["pid"]), p["name"], p["user"] or "", f"{p['cpu_percent']:.1f}", _size(p["rss_bytes"]))
        con.print(t)
    f = state["files"]
    con.print(f"[bold]Watched files:[/] {f['watched']} present, {f['deleted']} deleted; last change {_when(f['last_change']) or 'never'}")
    for source, items in state["facts"].items():  # collectors that report keyed snapshots
        t = table(source, "details", title=f"{source.capitalize()}: {len(items)}")
        for key, value in items.items():
            t.add_row(escape(key), escape(" ".join(f"{k}={v}" for k, v in value.items() if v is not None)))
        con.print(t)


def _render_changes(node: str | None, since: float, rows: list[dict]) -> None:
    from rich.console import Console

    from hub.cli import narrow, table

    con = Console()
    where = f"on {node}" if node else "on any node"
    if not rows:
        con.print(f"no changes {where} since {_when(since)} UTC")
        return
    colors = {"package": "cyan", "file": "magenta", "service": "yellow", "device": "green"}
    title = f"Changes {where} since {_when(since)} UTC"
    if narrow(con):  # a short time; kind over action; the detail under what changed
        t = table("time (UTC)", *([] if node else ["node"]), "kind", "what / detail", title=title,
                  keep=("node",), short=("time (UTC)", "kind"))
        for r in rows:
            c = colors.get(r["kind"], "white")
            t.add_row(r["time"][5:16], *([] if node else [r["node"]]), f"[{c}]{r['kind']}[/]\n{r['action']}",
                      f"{r['subject']}\n[dim]{r['detail'] or ''}[/]")
        con.print(t)
        return
    cols = ["time (UTC)"] + ([] if node else ["node"]) + ["kind", "action", "subject", "detail"]
    t = table(*cols, title=title, keep=("node",), short=("time (UTC)",))
    for r in rows:
        c = colors.get(r["kind"], "white")
        t.add_row(r["time"], *([] if node else [r["node"]]), f"[{c}]{r['kind']}[/]", r["action"],
                  r["subject"], r["detail"] or "")
    con.print(t)


# --- commands -------------------------------------------------------------------------


@click.command()
@click.argument("node")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the whole state as one JSON object.")
@domain_errors
def twin(node, data_dir, as_json) -> None:
    """Print NODE's current state: inventory, interfaces, mounts, packages, updates, services,
    devices, top processes, watched files."""
    db = _open(data_dir)
    try:
        state = Twin(db, node).state(limit=None if as_json else 50)
    finally:
        db.close()
    if as_json:
        click.echo(json.dumps(state))
    else:
        _render_twin(state)


@click.command()
@click.argument("node", required=False)
@data_dir_option
@click.option("--since", default="1d", show_default=True,
              help="How far back: a duration (30m, 12h, 7d) or an ISO date/time (UTC unless zoned).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(CHANGE_KINDS),
              help="Only these kinds of change (repeatable) [default: all].")
@click.option("--limit", default=10_000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per change.")
@domain_errors
def changes(node, data_dir, since, kinds, limit, as_json) -> None:
    """Print what changed on NODE, or on every node without one (packages, files, services,
    devices), as a timeline."""
    start = parse_since(since)
    db = _open(data_dir)
    try:
        rows = read_changes(db, node, start, tuple(kinds) or CHANGE_KINDS, limit)
    finally:
        db.close()
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
    else:
        _render_changes(node, start, rows)


COMMANDS = [twin, changes]
