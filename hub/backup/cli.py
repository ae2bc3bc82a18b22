"""`homelab-hub backup` and `homelab-hub restore`."""

from __future__ import annotations

import datetime
from pathlib import Path

import click

from hub.cli import data_dir_option, domain_errors, settings_from


@click.command()
@data_dir_option
@click.option("-o", "--output", "out", type=click.Path(path_type=Path),
              help="Archive to write [default ./homelab-backup-YYYYmmdd-HHMMSS.tar.gz].")
@domain_errors
def backup(data_dir, out) -> None:
    """Back up the hub (database snapshot, hub.toml, keys, TLS material) to one tar.gz.

    Safe while the hub runs: the database copy is a consistent snapshot and ingest goes on.
    The archive holds private keys and is created mode 0600."""
    from hub.backup import archive as b
    s = settings_from(data_dir=data_dir)
    if out is None:
        out = Path(f"homelab-backup-{datetime.datetime.now():%Y%m%d-%H%M%S}.tar.gz")
    info = b.create(s.data_dir, out, s.config_file)
    click.echo(f"wrote {info.path} ({len(info.files)} files, {len(info.nodes)} nodes)", err=True)
    click.echo(str(info.path))


@click.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@data_dir_option
@click.option("--force", is_flag=True, help="Restore even though a hub seems to be running on the data directory.")
@domain_errors
def restore(archive, data_dir, force) -> None:
    """Restore the hub from ARCHIVE (made by `homelab-hub backup`) after verifying its checksums.

    The files it replaces are moved to DATA_DIR/pre-restore-<time>/, never deleted."""
    from hub.backup import archive as b
    s = settings_from(data_dir=data_dir)
    m = b.restore(archive, s.data_dir, force=force)
    click.echo(f"restored {len(m['files'])} files into {s.data_dir}")
    if m["moved_aside"]:
        click.echo(f"previous files kept in {m['moved_aside']}")
    for node, seq in sorted(m["nodes"].items()):
        click.echo(f"  node {node}: hub resumes after seq {seq}")


COMMANDS = [backup, restore]
