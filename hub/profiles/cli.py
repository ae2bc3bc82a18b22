"""`homelab-hub profiles ...`: node profiles, applied as proposals a person approves."""

from __future__ import annotations

import contextlib

import click

from hub.cli import data_dir_option, deprecated, domain_errors, settings_from
from hub.config import db_path


@contextlib.contextmanager
def _write_db(s):
    from hub.store import open_db

    path = db_path(s.data_dir)
    if not path.exists():
        raise click.ClickException(f"no hub database at {path} (is --data-dir right?)")
    db = open_db(path)
    db.execute("PRAGMA busy_timeout = 10000")
    try:
        db.execute("BEGIN IMMEDIATE")
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()


def _dir(s):
    from hub.profiles.web import profiles_dir

    return profiles_dir(s)


@click.group()
def profiles() -> None:
    """Node profiles: packages, config files and dotfiles for new machines."""


@profiles.command("list")
@data_dir_option
@domain_errors
def list_(data_dir) -> None:
    """List the profiles in profiles_dir (each is validated)."""
    from hub.profiles import spec
    s = settings_from(data_dir=data_dir)
    found = spec.all_profiles(_dir(s))
    if not found:
        click.echo(f"no profiles in {_dir(s)}", err=True)
    for p in found:
        click.echo(f"{p.name}\t{len(p.packages)} packages, {len(p.files)} files\t{p.description}")


@profiles.command("show")
@click.argument("name")
@data_dir_option
@domain_errors
def show(name, data_dir) -> None:
    """Show what profile NAME would install and write."""
    from hub.profiles import spec
    p = spec.find(_dir(settings_from(data_dir=data_dir)), name)
    click.echo(f"{p.name}: {p.description}")
    click.echo(f"packages: {' '.join(p.packages) or '-'}")
    for f in p.files:
        where = f"~{f.user}{f.path}" if f.user else f.path
        click.echo(f"file {where}  mode {f.mode} owner {f.owner}  {len(f.content)} bytes")


@profiles.command("assign")
@click.argument("node")
@click.argument("name")
@data_dir_option
@domain_errors
def assign(node, name, data_dir) -> None:
    """Apply profile NAME to NODE as proposals as soon as NODE first reports (use right after enroll)."""
    from hub.profiles import spec
    s = settings_from(data_dir=data_dir)
    spec.find(_dir(s), name)  # refuse a missing or invalid profile now, not later
    with _write_db(s) as db:
        spec.assign(db, node, name)
    click.echo(f"profile {name} assigned to {node}: its proposals appear when {node} first reports")


@profiles.command("apply")
@click.argument("node")
@click.argument("name")
@data_dir_option
@domain_errors
def apply(node, name, data_dir) -> None:
    """Propose applying profile NAME to NODE now (approve with `homelab-hub approve ID`)."""
    from hub.playbooks import Registry
    from hub.profiles import spec
    from hub.proposals import os_user

    s = settings_from(data_dir=data_dir)
    p = spec.find(_dir(s), name)
    with _write_db(s) as db:
        ids = spec.propose(db, Registry.from_settings(s), node, p, actor=os_user(),
                               ttl=getattr(s, "proposal_ttl", 86400.0))
    click.echo(f"proposed {len(ids)} change(s) for {node}: {' '.join(map(str, ids))}")
    click.echo("review with `homelab-hub proposals`, then `homelab-hub approve ID`", err=True)


COMMANDS = [profiles, deprecated(profiles, "profile", "profiles")]
