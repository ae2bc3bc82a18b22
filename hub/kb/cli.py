"""`homelab-hub kb ...`: add, search, list, show, set-category, remove, watch, token."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from hub.cli import data_dir_option, domain_errors, settings_from
from hub.config import db_path


def _open(settings):
    from hub import kb
    from hub.store import open_db

    db = open_db(db_path(settings.data_dir))
    db.execute("BEGIN IMMEDIATE")
    try:
        kb.sync_categories(db, settings.kb_categories)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return db


@contextlib.contextmanager
def _db(data_dir, **flags):
    s = settings_from(data_dir=data_dir, **flags)
    db = _open(s)
    try:
        yield s, db
    finally:
        db.close()


def _require_node(db, node: str) -> None:
    from hub.nodes import require_node

    require_node(db, node, also="SELECT DISTINCT node FROM kb_documents")


def _write(db, fn):
    db.execute("BEGIN IMMEDIATE")
    try:
        r = fn(db)
        db.execute("COMMIT")
        return r
    except BaseException:
        db.execute("ROLLBACK")
        raise


@click.group()
def kb() -> None:
    """The knowledge base: notes, runbooks, clippings and snippets (docs/kb.md)."""


@kb.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--category", help="Category for every document added (also teaches the classifier).")
@click.option("--tag", "tags", multiple=True, help="Tag to add to every document (repeatable).")
@click.option("--node", help="Node these documents are about.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@data_dir_option
@domain_errors
def add(targets, category, tags, node, as_json, data_dir) -> None:
    """Add files, folders (recursively) and URLs. Unchanged files are left alone."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from hub import kb as kbm

    err = Console(stderr=True)
    with _db(data_dir) as (s, db):
        progress = Progress(TextColumn("[bold]kb add"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), TextColumn("{task.description}"),
                            console=err, disable=as_json or not err.is_terminal, transient=True)
        with progress:
            task = progress.add_task("", total=None)
            summary = kbm.add(
                db, targets, category=category, tags=tags, node=node, max_bytes=s.kb_max_bytes,
                on_total=lambda n: progress.update(task, total=n),
                progress=lambda src, n: progress.update(task, advance=n, description=Path(src).name[:40]),
            )
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
        return
    out = Console()
    out.print(f"added {len(summary.added)}, updated {len(summary.updated)}, "
              f"unchanged {len(summary.unchanged)}, skipped {len(summary.skipped)}")
    for src, reason in summary.skipped:
        out.print(f"[yellow]skipped[/] {src}: {reason}", markup=True, highlight=False)
    for src, warning in summary.warnings:
        out.print(f"[yellow]warning[/] {src}: {warning}", markup=True, highlight=False)


@kb.command()
@click.argument("query")
@click.option("--category", help="Only this category.")
@click.option("--tag", help="Only documents with this tag.")
@click.option("--node", help="Only documents about this node.")
@click.option("--since", help="Only documents dated on/after this (YYYY-MM-DD, ISO time, or an age like 30d).")
@click.option("--until", help="Only documents dated before this.")
@click.option("-n", "--limit", default=5, show_default=True, type=click.IntRange(1, 500))
@click.option("--per-doc", default=1, show_default=True, type=int, help="Passages per document (0: no limit).")
@click.option("--hybrid/--no-hybrid", default=None, help="Fuse with model embeddings [setting kb_hybrid].")
@click.option("--json", "as_json", is_flag=True, help="Print the ranked results as a JSON array.")
@data_dir_option
@domain_errors
def search(query, category, tag, node, since, until, limit, per_doc, hybrid, as_json, data_dir) -> None:
    """Search the knowledge base; best passages first."""
    from hub import kb as kbm

    with _db(data_dir) as (s, db):
        if node:
            _require_node(db, node)
        results = kbm.search(db, query, limit, category=category, tag=tag, node=node, since=since,
                             until=until, per_document=per_doc,
                             hybrid=s.kb_hybrid if hybrid is None else hybrid,
                             highlight=("**", "**") if as_json else ("\x02", "\x03"))
    if as_json:
        click.echo(json.dumps(results))
        return
    from rich.console import Console
    from rich.text import Text

    out = Console()
    if not results:
        out.print("no matches")
    for i, r in enumerate(results, 1):
        out.print(Text.assemble((f"{i}. ", "bold"), (r["heading_path"], "bold cyan"),
                                (f"  [{r['category']}] doc {r['document_id']}", "dim")))
        out.print(Text(f"   {r['source']}", style="dim"))
        out.print(_highlighted(r["snippet"]))


def _highlighted(snippet: str):
    from rich.text import Text

    t = Text("   ")
    bold = False
    flat = " ".join(snippet.split())  # one line per hit in a terminal
    for part in flat.replace("\x03", "\x02").split("\x02"):
        t.append(part, style="bold yellow" if bold else "")
        bold = not bold
    return t


@kb.command("list")
@click.option("--category", help="Only this category.")
@click.option("--tag", help="Only documents with this tag.")
@click.option("--node", help="Only documents about this node.")
@click.option("-n", "--limit", default=100, show_default=True, type=click.IntRange(1, 100000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per document.")
@data_dir_option
@domain_errors
def list_(category, tag, node, limit, as_json, data_dir) -> None:
    """List documents, newest first."""
    from hub.kb.views import list_documents

    with _db(data_dir) as (_s, db):
        if node:
            _require_node(db, node)
        rows = list_documents(db, category=category, tag=tag, node=node, limit=limit)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    from rich.console import Console

    from hub.cli import narrow, table

    con = Console()
    if narrow(con):  # the source under the title, the tags under the category
        t = table("id", "title / source", "category / tags", "node")
        for r in rows:
            t.add_row(str(r["id"]), f"{r['title']}\n[dim]{r['source']}[/]",
                      f"{r['category']} ({r['category_source']})\n[dim]{' '.join(r['tags'])}[/]", r["node"] or "")
        con.print(t)
        return
    t = table("id", "title", "category", "tags", "node", "source")
    for r in rows:
        t.add_row(str(r["id"]), r["title"], f"{r['category']} ({r['category_source']})",
                  " ".join(r["tags"]), r["node"] or "", r["source"])
    con.print(t)


@kb.command()
@click.argument("doc_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="The document and its passages as JSON.")
@data_dir_option
@domain_errors
def show(doc_id, as_json, data_dir) -> None:
    """Show document DOC_ID: its metadata and text."""
    from hub.kb.views import document

    with _db(data_dir) as (_s, db):
        d = document(db, doc_id)
    if as_json:
        click.echo(json.dumps(d))
        return
    from rich.console import Console
    from rich.markdown import Markdown

    out = Console()
    out.print(f"[bold]{d['title']}[/]  (doc {d['id']}, {d['kind']}, {d['category']} by {d['category_source']})",
              highlight=False)
    out.print(f"[dim]{d['source']}  tags: {' '.join(d['tags']) or '-'}  node: {d['node'] or '-'}[/]",
              highlight=False)
    body = f"```{d['language'] or ''}\n{d['body']}\n```" if d["kind"] == "code" else d["body"]
    out.print(Markdown(body))


@kb.command("set-category")
@click.argument("doc_id", type=int)
@click.argument("category")
@data_dir_option
@domain_errors
def set_category(doc_id, category, data_dir) -> None:
    """Set DOC_ID's category by hand; kept across edits and taught to the classifier."""
    from hub import kb as kbm

    with _db(data_dir) as (_s, db):
        r = _write(db, lambda db: kbm.set_category(db, doc_id, category))
    click.echo(f"doc {r['id']}: {r['was']} -> {r['category']}")


@kb.command()
@click.argument("doc_ids", type=int, nargs=-1, required=True)
@data_dir_option
@domain_errors
def remove(doc_ids, data_dir) -> None:
    """Remove documents by id (their passages and tags go with them)."""
    from hub import kb as kbm

    with _db(data_dir) as (_s, db):
        for i in doc_ids:
            r = _write(db, lambda db, i=i: kbm.remove(db, i))
            click.echo(f"removed doc {r['id']}: {r['title']} ({r['source']})")


@kb.command()
@data_dir_option
@domain_errors
def categories(data_dir) -> None:
    """List categories with their document counts."""
    with _db(data_dir) as (_s, db):
        rows = db.execute(
            "SELECT c.name, c.active, count(d.id) FROM kb_categories c"
            " LEFT JOIN kb_documents d ON d.category = c.name GROUP BY c.name ORDER BY c.rowid").fetchall()
    for name, active, n in rows:
        click.echo(f"{name}\t{n}" + ("" if active else "\t(inactive)"))


@kb.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--duration", type=float, help="Stop after this many seconds (demos, tests).")
@click.option("--debounce", default=0.5, show_default=True, type=float,
              help="Seconds of quiet before a burst of changes is applied.")
@data_dir_option
@domain_errors
def watch(directory, duration, debounce, data_dir) -> None:
    """Keep DIRECTORY in sync: additions, changes, deletions and renames."""
    from hub.kb.watch import Watcher

    s = settings_from(data_dir=data_dir)
    _open(s).close()
    w = Watcher(db_path(s.data_dir), directory, max_bytes=s.kb_max_bytes, debounce=debounce,
                report=lambda msg: click.echo(msg, err=True))
    w.run(duration=duration)


@kb.command()
@data_dir_option
@domain_errors
def token(data_dir) -> None:
    """Print the hub's admin API token (created on first use, mode 0600) for GET /v1/kb/search."""
    from hub.kb.token import admin_token

    click.echo(admin_token(settings_from(data_dir=data_dir).data_dir))
    if sys.stdout.isatty():
        click.echo("Send it as 'Authorization: Bearer <token>'.", err=True)


COMMANDS = [kb]
