"""`homelab-hub ansible export NODE -o DIR` and `homelab-hub ansible drift NODE`."""

from __future__ import annotations

from pathlib import Path

import click

from hub.cli import data_dir_option, deprecated, domain_errors, settings_from
from hub.config import db_path


def _read_db(s):
    from hub.store import connect

    path = db_path(s.data_dir)
    if not path.exists():
        raise click.ClickException(f"no hub database at {path}")
    return connect(path, readonly=True)


@click.group()
def ansible() -> None:
    """Configuration as code: a node as an Ansible playbook, and what drifted since."""


@ansible.command("export")
@click.argument("node")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for inventory.ini, site.yml, host_vars/, files/ and README.md.")
@data_dir_option
@domain_errors
def export_cmd(node, out, data_dir) -> None:
    """Write an inventory and playbook that recreate NODE from a fresh OS install.

    The export is also recorded as the baseline `homelab-hub ansible drift NODE` compares against."""
    from hub.ansible import export as ansible
    from hub.server import public_url
    from hub.store import open_db

    s = settings_from(data_dir=data_dir)
    db = _read_db(s)
    try:
        manifest = ansible.export(db, node, out, public_url(s))
    finally:
        db.close()
    wdb = open_db(db_path(s.data_dir))
    try:
        wdb.execute("PRAGMA busy_timeout = 10000")
        wdb.execute("BEGIN IMMEDIATE")
        ansible.record(wdb, manifest)
        wdb.execute("COMMIT")
    finally:
        wdb.close()
    files = manifest["files"]
    manual = sum(1 for f in files.values() if not f["content_known"])
    click.echo(f"wrote {out}/site.yml: {sum(len(p) for p in manifest['packages'].values())} packages, "
               f"{len(manifest['services'])} services, {len(files) - manual} files"
               + (f"; {manual} files are manual steps (see {out}/README.md)" if manual else ""))


@ansible.command("drift")
@click.argument("node")
@click.option("--baseline", default="last-export", show_default=True,
              help="'last-export', or an export directory / export.json to compare with.")
@click.option("--exit-code", is_flag=True, help="Exit 1 when there is drift (for scripts), like git diff.")
@data_dir_option
@domain_errors
def drift_cmd(node, baseline, exit_code, data_dir) -> None:
    """Show what differs on NODE now from its last export (or a chosen baseline)."""
    from hub.ansible import export as ansible
    s = settings_from(data_dir=data_dir)
    db = _read_db(s)
    try:
        if baseline == "last-export":  # an explicit baseline names its own node
            from hub.nodes import require_node

            require_node(db, node)
        base = ansible.last_export(db, node) if baseline == "last-export" else ansible.load_baseline(Path(baseline))
        lines = ansible.drift(db, node, base)
    finally:
        db.close()
    since = f"the export of {ansible.when(base['exported'])} ({base.get('dir', '?')})" if "exported" in base else baseline
    if not lines:
        click.echo(f"{node}: no drift since {since}")
        return
    click.echo(f"{node}: drift since {since}")
    for line in lines:
        click.echo(line)
    if exit_code:
        click.get_current_context().exit(1)


COMMANDS = [
    ansible,
    click.Group("export", hidden=True, help="Deprecated: see `homelab-hub ansible`.",
                commands=[deprecated(export_cmd, "export ansible", "ansible export")]),
    deprecated(drift_cmd, "drift", "ansible drift"),
]
