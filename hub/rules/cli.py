"""``homelab-hub rules check|test|list`` and ``homelab-hub alerts``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from hub.cli import data_dir_option, domain_errors, settings_from
from hub.config import db_path


def _default_paths(data_dir) -> list[Path]:
    from hub.rules.web import rule_paths

    return rule_paths(settings_from(data_dir=data_dir))


@click.group()
def rules() -> None:
    """Alerting rules: validate them, run their unit tests, list them."""


@rules.command("check")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@data_dir_option
@domain_errors
def check(paths, data_dir) -> None:
    """Validate rule files (default: the shipped rules/ and rules_dir). Reports every error,
    each naming file, line and key, including playbooks that are not installed and
    parameters a playbook does not declare; exits 1 if any file is bad."""
    from hub.playbooks import Registry
    from hub.rules.loader import load_paths

    books = Registry.from_settings(settings_from(data_dir=data_dir)).all()
    loaded, errors = load_paths(list(paths) or _default_paths(data_dir), books)
    for e in errors:
        click.echo(f"error: {e}", err=True)
    files = len({r.file for r in loaded})
    click.echo(f"{len(loaded)} rule(s) in {files} file(s) OK" + (f", {len(errors)} error(s)" if errors else ""))
    if errors:
        raise SystemExit(1)


@rules.command("reload")
@data_dir_option
@click.option("--wait", default=30.0, show_default=True, help="Seconds to wait for the running hub's answer.")
@domain_errors
def reload(data_dir, wait) -> None:
    """Load changed rule files into the running hub (as SIGHUP does): all valid or none; the
    running set is untouched on any error, and alerts of unchanged rules are kept. The files
    are checked here first; exits 1 if any is bad or the hub refused them."""
    from hub.playbooks import Registry
    from hub.proposals import os_user
    from hub.rules.loader import load_paths
    from hub.store import open_db

    s = settings_from(data_dir=data_dir)
    loaded, errors = load_paths(_default_paths(data_dir), Registry.from_settings(s).all())
    for e in errors:
        click.echo(f"error: {e}", err=True)
    if errors:
        raise click.ClickException(f"{len(errors)} error(s): nothing reloaded, the running rules are unchanged")
    path = db_path(s.data_dir)
    if not path.exists():
        raise click.ClickException(f"no hub database at {path} (is --data-dir right?)")
    db = open_db(path)
    try:
        with db:
            rid = db.execute("INSERT INTO rule_reloads (requested, requested_by) VALUES (?, ?)",
                             (time.time(), os_user())).lastrowid
        deadline = time.monotonic() + wait
        while True:
            row = db.execute("SELECT done, ok, outcome FROM rule_reloads WHERE id = ?", (rid,)).fetchone()
            if row[0] is not None:
                break
            if time.monotonic() > deadline:
                raise click.ClickException(f"the files are valid ({len(loaded)} rule(s)), but no running hub answered"
                                           f" within {wait:g}s (is it running on {path}?); a hub that starts loads them")
            time.sleep(0.2)
    finally:
        db.close()
    if not row[1]:
        raise click.ClickException(row[2])
    click.echo(row[2])


@rules.command("test")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("-v", "--verbose", is_flag=True, help="Name every case, not only failures.")
@domain_errors
def test(paths, verbose) -> None:
    """Run rule unit tests (default: the shipped rules/tests/). Exits 1 on any failure."""
    from hub.paths import shipped
    from hub.rules.testing import run_paths

    results, errors = run_paths(list(paths) or [shipped("rules")])
    for e in errors:
        click.echo(f"error: {e}", err=True)
    for r in results:
        if not r.ok or verbose:
            click.echo(f"{'PASS' if r.ok else 'FAIL'} {r.file}: {r.name}")
        for f in r.failures:
            click.echo(f"  {f}")
    failed = sum(1 for r in results if not r.ok)
    click.echo(f"{len(results) - failed} passed, {failed} failed, {len(errors)} error(s)")
    if failed or errors or not results:
        raise SystemExit(1)


@rules.command("list")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per rule.")
@domain_errors
def list_(paths, data_dir, as_json) -> None:
    """List the rules the hub loads (or the rules in PATHS)."""
    from hub.rules.loader import load_paths

    loaded, errors = load_paths(list(paths) or _default_paths(data_dir))
    for e in errors:
        click.echo(f"error (file skipped): {e}", err=True)
    if as_json:
        for r in loaded:
            click.echo(json.dumps(r.to_json()))
        return
    from rich.console import Console

    from hub.cli import narrow, table

    con = Console()
    small = narrow(con)  # severity over for:, the playbooks under what the rule watches
    cols = ("rule", "severity", "watches / playbooks", "file") if small else (
        "rule", "watches", "severity", "for", "playbooks", "file")
    t = table(*cols, short=("severity", "file"))
    for r in loaded:
        watches = r.kind if r.source == "event" else (f"metric {r.metric}" if r.source == "metric" else r.source)
        books, where = ", ".join(p for p, _, _ in r.propose), f"{Path(r.file).name}:{r.line}"
        if small:
            t.add_row(r.name, f"{r.severity}\n[dim]for {r.for_:g}s[/]", f"{watches}\n[dim]{books}[/]", where)
        else:
            t.add_row(r.name, watches, r.severity, f"{r.for_:g}s", books, where)
    con.print(t)


@click.command()
@data_dir_option
@click.option("--state", type=click.Choice(["pending", "firing", "resolved"]), help="Only alerts in this state.")
@click.option("--limit", type=int, default=200, show_default=True, help="Newest N alerts.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per alert.")
@domain_errors
def alerts(data_dir, state, limit, as_json) -> None:
    """List alerts, newest first: state, rule, node, count, first/last seen."""
    from hub.queries import ago
    from hub.rules.alerts import list_alerts

    s = settings_from(data_dir=data_dir)
    rows = list_alerts(db_path(s.data_dir), state, limit)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, default=str))
        return
    from rich.console import Console

    from hub.cli import narrow, table

    con = Console()
    now = time.time()
    if narrow(con):  # the rule under the node, severity under state; no counts or ages
        t = table("id", "node / rule", "state", "summary", short=("state",))
        for r in rows:
            color = {"firing": "red", "pending": "yellow"}.get(r["state"], "green")
            t.add_row(str(r["id"]), f"{r['node'] or '-'}\n[dim]{r['rule']}[/]",
                      f"[{color}]{r['state']}[/]\n{r['severity']}", r["summary"] or "")
        con.print(t)
        return
    t = table("id", "state", "severity", "rule", "node", "count", "first seen", "last seen", "summary")
    for r in rows:
        color = {"firing": "red", "pending": "yellow"}.get(r["state"], "green")
        t.add_row(str(r["id"]), f"[{color}]{r['state']}[/]", r["severity"], r["rule"], r["node"] or "",
                  str(r["count"]), ago(now - r["first_seen"]), ago(now - r["last_seen"]), r["summary"] or "")
    con.print(t)


COMMANDS = [rules, alerts]
