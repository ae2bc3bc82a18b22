"""`homelab-hub playbooks list|show|check`: what fixes exist, exactly, and whether they are sound."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from hub.cli import data_dir_option, domain_errors, settings_from


def _registry(data_dir):
    from hub.playbooks.registry import Registry

    return Registry.from_settings(settings_from(data_dir=data_dir))


@click.group()
def playbooks() -> None:
    """The playbooks proposals may name (settings.playbooks_dir or the shipped playbooks/)."""


@playbooks.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per playbook.")
@domain_errors
def list_(data_dir, as_json) -> None:
    """Name, risk tier, timeout, parameters and description of every playbook."""
    reg = _registry(data_dir)
    books = reg.all()
    if as_json:
        for pb in books.values():
            click.echo(json.dumps({"name": pb.name, "risk": pb.risk, "timeout": pb.timeout,
                                   "params": list(pb.params), "description": pb.description,
                                   "check": bool(pb.check), "verify": bool(pb.verify),
                                   "rollback": bool(pb.rollback), "sha256": pb.sha256, "path": pb.path}))
    else:
        from rich.console import Console

        from hub.cli import narrow, table

        c = Console()
        c = c if c.is_terminal or os.environ.get("COLUMNS") else Console(width=200)
        small = narrow(c)  # risk and timeout under the name, steps under the parameters
        cols = ("name / risk", "params / steps", "description") if small else (
            "name", "risk", "timeout", "params", "steps", "description")
        t = table(*cols, keep=("name",))
        for pb in books.values():
            steps = ",".join(k for k in ("check", "verify", "rollback") if getattr(pb, k))
            params = ", ".join(pb.params)
            if small:
                t.add_row(f"{pb.name}\n[dim]{pb.risk}, {pb.timeout}s[/]", f"{params}\n[dim]{steps}[/]",
                          pb.description)
            else:
                t.add_row(pb.name, pb.risk, f"{pb.timeout}s", params, steps, pb.description)
        c.print(t)
    for e in reg.errors:
        click.echo(f"left out: {e}", err=True)


@playbooks.command("show")
@click.argument("name")
@data_dir_option
@domain_errors
def show(name, data_dir) -> None:
    """The header, parameter schema and full script of playbook NAME."""
    from agent.playbook import json_schema

    pb = _registry(data_dir).get(name)
    if pb is None:
        raise click.ClickException(f"no playbook {name!r} (see `homelab-hub playbooks list`)")
    click.echo(f"{pb.name} — {pb.description}")
    click.echo(f"risk {pb.risk}; timeout {pb.timeout}s; sha256 {pb.sha256}; {pb.path}")
    for k in ("check", "verify", "rollback"):
        if getattr(pb, k):
            click.echo(f"{k}: {getattr(pb, k)}")
    click.echo("parameters (JSON Schema):")
    click.echo(json.dumps(json_schema(pb), indent=2))
    click.echo("script:")
    click.echo(pb.text.rstrip())


@playbooks.command("check")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@data_dir_option
@domain_errors
def check(path, data_dir) -> None:
    """Validate headers and run `bash -n` and shellcheck (when installed) on PATH (a playbook
    or a directory; default: the configured playbooks). Exits non-zero on any problem."""
    import shutil

    from agent.playbook import PlaybookError, load
    from hub.playbooks.registry import lint, playbooks_dir

    target = path or playbooks_dir(settings_from(data_dir=data_dir))
    files = sorted(target.glob("*.sh")) if target.is_dir() else [target]
    if not files:
        raise click.ClickException(f"no *.sh playbooks in {target}")
    failed = 0
    names: dict[str, Path] = {}
    for f in files:
        problems = []
        try:
            pb = load(f)
            if pb.name in names:
                problems.append(f"name {pb.name!r} is also used by {names[pb.name]}")
            names[pb.name] = f
        except PlaybookError as e:
            problems.append(str(e))
        problems += lint(f)
        if problems:
            failed += 1
            click.echo(f"FAIL {f}")
            for p in problems:
                click.echo("  " + p.replace("\n", "\n  "))
        else:
            click.echo(f"ok   {f}")
    if not shutil.which("shellcheck"):
        click.echo("note: shellcheck is not installed; only bash -n was run", err=True)
    if failed:
        raise click.ClickException(f"{failed} of {len(files)} playbook(s) have problems")
    click.echo(f"{len(files)} playbook(s) ok")


COMMANDS = [playbooks]
