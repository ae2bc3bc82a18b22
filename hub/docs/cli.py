"""`homelab-hub docs build`: write (and optionally commit) the node pages."""

from __future__ import annotations

from pathlib import Path

import click

from hub.cli import data_dir_option, domain_errors, settings_from
from hub.config import db_path


@click.group()
def docs() -> None:
    """Self-documentation: one markdown page per node plus a fleet index."""


@docs.command("build")
@click.argument("node", required=False)
@data_dir_option
@click.option("-o", "--output", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for index.md and nodes/ [default: the --git directory, else DATA_DIR/docs].")
@click.option("--git", "git_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Git repository (created if needed) to commit the rebuild in; pages go there unless -o is inside it.")
@domain_errors
def build(node, data_dir, out, git_dir) -> None:
    """Write the pages for every node (or just NODE). Unchanged pages are not rewritten."""
    from hub.docs import pages as docsgen
    from hub.store import connect

    s = settings_from(data_dir=data_dir)
    if out is None:
        out = git_dir or s.docs_dir or s.data_dir / "docs"
    if git_dir is not None and not out.resolve().is_relative_to(git_dir.resolve()):
        raise click.UsageError(f"-o {out} is outside the --git repository {git_dir}")
    path = db_path(s.data_dir)
    if not path.exists():
        raise click.ClickException(f"no hub database at {path}")
    db = connect(path, readonly=True)
    try:
        res = docsgen.build(db, out, node)
    finally:
        db.close()
    for p in res.written:
        click.echo(f"wrote {p}")
    if not res.written:
        click.echo("no page changed", err=True)
    if git_dir is not None:
        git_dir.mkdir(parents=True, exist_ok=True)
        try:
            commit = docsgen.git_commit(git_dir, res, out)
        except RuntimeError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"committed {commit[:12]}: {res.message()}" if commit else "nothing to commit", err=True)


COMMANDS = [docs]
