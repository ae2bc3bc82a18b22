"""homelab-hub command line: parses and delegates. Domain errors become ClickException here."""

from __future__ import annotations

import copy
import functools
import json
import logging
import sys
from pathlib import Path

import click

from agent import __version__
from agent.settings import SettingsError
from hub.config import db_path, load_settings
from hub.errors import HubError


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def settings_from(**flags):
    try:
        return load_settings(**flags)
    except SettingsError as e:
        raise click.ClickException(str(e)) from None


def data_dir_option(fn):
    return click.option(
        "--data-dir", type=click.Path(path_type=Path),
        help="Hub data directory [$HOMELAB_HUB_DATA_DIR; default ~/.local/share/homelab].",
    )(fn)


def domain_errors(fn):
    """Turn hub errors into clean CLI errors at the edge."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except (HubError, SettingsError) as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def deprecated(cmd: click.Command, old: str, new: str) -> click.Command:
    """``cmd`` under a spelling it had before (``old``, e.g. "export ansible"), for the scripts
    that still use it: hidden from --help, and it says the new spelling on stderr, once."""
    alias = copy.copy(cmd)
    alias.name, alias.hidden = old.split()[-1], True
    alias.help = f"Deprecated spelling of `homelab-hub {new}`."
    callback = cmd.callback

    def warn(*a, **kw):
        click.echo(f"warning: `homelab-hub {old}` is deprecated; use `homelab-hub {new}`", err=True)
        return callback(*a, **kw) if callback else None

    alias.callback = warn
    return alias


NAMES = ("node", "rule")


def table(*headers: str, keep: tuple[str, ...] = NAMES, short: tuple[str, ...] = (), **kw):
    """A rich Table that reads at 80 columns: no vertical rules, and a cell too long for its
    column wraps (or folds) onto more lines instead of ending in an ellipsis. Columns whose
    header starts with a name in ``keep`` (node and rule names, which people copy into the
    next command) are never wrapped; such a cell may stack names (``"node\nrule"``) to save
    width. (no_wrap, not min_width: rich crops the other cells when min_width squeezes them.)
    ``short`` names more columns that must not wrap (states, ages, times): short values that
    read badly when broken."""
    from rich import box
    from rich.table import Table

    if kw.get("title"):  # a title wraps to the table's width: keep it on one line
        kw.setdefault("min_width", len(str(kw["title"])))
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, **kw)
    for h in headers:
        t.add_column(h, overflow="fold", no_wrap=h.split(" ")[0] in keep or h in short)
    return t


def narrow(console=None) -> bool:
    """True for a terminal under 120 columns, where tables choose fewer, stacked columns."""
    from rich.console import Console

    return (console or Console()).width < 120


@click.group()
@click.version_option(__version__)
def cli() -> None:
    """Sentient Homelab hub: stores what every node reports, detects, proposes, remembers."""


@cli.command()
@data_dir_option
@click.option("--listen", help="host:port [$HOMELAB_HUB_LISTEN; default tailnet address or 127.0.0.1:8470].")
@click.option("--tls/--no-tls", default=None, help="HTTPS with the hub's own pinned certificate [$HOMELAB_HUB_TLS].")
@click.option("-v", "--verbose", is_flag=True)
@domain_errors
def serve(data_dir, listen, tls, verbose) -> None:
    """Run the hub server (what homelab-hub.service runs)."""
    from hub.server import serve as run_serve

    setup_logging(verbose)
    run_serve(settings_from(data_dir=data_dir, listen=listen, tls=tls))


@cli.command()
@data_dir_option
@click.option("--listen", help="host:port for the hub [default 127.0.0.1:8470].")
@click.option("--datasette-port", type=int, help="Datasette port [default 8471; 0 picks a free one].")
@click.option("--watch", multiple=True, help="Paths the local agent watches [default /etc].")
@click.option("--no-datasette", is_flag=True, help="Do not start Datasette.")
@click.option("--duration", type=float, help="Stop after this many seconds (demos, tests).")
@click.option("-v", "--verbose", is_flag=True)
@domain_errors
def up(data_dir, listen, datasette_port, watch, no_datasette, duration, verbose) -> None:
    """Start the single-machine homelab: hub, a local agent and Datasette, on loopback."""
    from hub.server import up as run_up

    setup_logging(verbose)
    s = settings_from(data_dir=data_dir, listen=listen or "127.0.0.1:8470", datasette_port=datasette_port)
    run_up(s, watch=list(watch), datasette=not no_datasette, duration=duration)


@cli.command()
@click.argument("name")
@data_dir_option
@click.option("--ttl", help="Token lifetime, e.g. 1h or 30m [$HOMELAB_HUB_TOKEN_TTL; default 1h].")
@click.option("--insecure", is_flag=True,
              help="Enrol over plain HTTP off the tailnet anyway (the token and the agent travel unprotected).")
@domain_errors
def enroll(name, data_dir, ttl, insecure) -> None:
    """Enrol node NAME: print a one-time join token and the command to run on the node.
    Refuses a plain-HTTP hub URL that is neither on the tailnet nor loopback, unless --insecure."""
    from hub import auth
    from hub.onboarding import plain_http_risk
    from hub.server import public_url
    from hub.store import open_db

    s = settings_from(data_dir=data_dir, token_ttl=ttl)
    risk = plain_http_risk(public_url(s))
    if risk and not insecure:
        raise click.ClickException(risk)
    if risk:
        click.echo(f"warning: {risk}", err=True)
    db = open_db(db_path(s.data_dir))
    db.execute("BEGIN IMMEDIATE")
    token = auth.enroll(db, name, s.token_ttl)
    db.execute("COMMIT")
    db.close()
    click.echo(f"Node {name!r} enrolled; the token is valid for {int(s.token_ttl)}s and works once.", err=True)
    click.echo("On a new machine (needs only python3 and curl; everything else comes from this hub), run:", err=True)
    from hub.onboarding import one_liner

    click.echo(one_liner(public_url(s), token, s))
    click.echo("Or, where homelab-agent is already installed:", err=True)
    pin = ""
    if s.tls:  # the hub's own certificate: the node pins it at join time
        from hub import tls

        pin = f" --fingerprint {tls.fingerprint(s.data_dir)}"
    click.echo(f"homelab-agent join {public_url(s)} {token}{pin}")


@cli.command()
@click.argument("name")
@data_dir_option
@domain_errors
def revoke(name, data_dir) -> None:
    """Revoke node NAME's credential and unused join tokens, at once (its history stays).
    Enrol it again to let it back in."""
    from hub import audit, auth
    from hub.proposals import os_user
    from hub.store import open_db

    s = settings_from(data_dir=data_dir)
    db = open_db(db_path(s.data_dir))
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            auth.revoke(db, name)
            audit.append(db, os_user(), "node revoked", None, {"node": name})
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.close()
    click.echo(f"node {name!r} revoked: its credential is refused from now on")


@cli.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per node.")
@domain_errors
def nodes(data_dir, as_json) -> None:
    """List nodes: online/offline, last seen, events stored."""
    from hub.queries import node_list

    s = settings_from(data_dir=data_dir)
    rows = node_list(db_path(s.data_dir), s.offline_after)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    from rich.console import Console

    con = Console()
    wide = not narrow(con)  # sequence numbers and clock skew only where there is room
    cols = ["node", "state", "last seen"] + (["last seq", "clock skew"] if wide else []) + ["address"]
    t = table(*cols, short=("state", "last seen"))
    for r in rows:
        color = {"online": "green", "offline": "red"}.get(r["state"], "yellow")
        extra = [str(r["last_seq"]), "" if r["clock_skew"] is None else f"{r['clock_skew']:+.1f}s"] if wide else []
        t.add_row(r["name"], f"[{color}]{r['state']}[/]", r["last_seen_ago"], *extra, r["address"] or "")
    con.print(t)


@cli.group()
def db() -> None:
    """The hub database."""


@db.command("path")
@data_dir_option
@domain_errors
def db_path_cmd(data_dir) -> None:
    """Print the database path (datasette "$(homelab-hub db path)")."""
    click.echo(str(db_path(settings_from(data_dir=data_dir).data_dir)))


@db.command("export")
@click.argument("table")
@data_dir_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True, help="JSON lines (one object per row) or CSV with a header.")
@click.option("--where", help="An SQL condition on the table's columns, e.g. \"node = 'nas'\".")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here instead of standard output.")
@domain_errors
def db_export(table, data_dir, fmt, where, output) -> None:
    """Write TABLE (or a view) as JSON lines or CSV; secret columns are left empty."""
    from hub.dbio import export_rows, write

    columns, rows = export_rows(db_path(settings_from(data_dir=data_dir).data_dir), table, where)
    if output is None:
        write(sys.stdout, columns, rows, fmt)
        return
    with open(output, "w", newline="") as f:
        n = write(f, columns, rows, fmt)
    click.echo(f"{n} rows of {table} written to {output}", err=True)


@db.command("import")
@click.argument("table")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@data_dir_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]),
              help="Default: by the file's extension (.csv is CSV, anything else JSON lines).")
@domain_errors
def db_import(table, file, data_dir, fmt) -> None:
    """Upsert rows from FILE into TABLE, all or nothing (only tables a person authors)."""
    from hub.dbio import import_rows, read

    fmt = fmt or ("csv" if str(file).endswith(".csv") else "jsonl")
    with click.open_file(file) as f:
        text = f.read()
    path = db_path(settings_from(data_dir=data_dir).data_dir)
    n = import_rows(path, table, read(text, fmt, file), file)
    click.echo(f"{n} rows imported into {table}")


@cli.command()
@data_dir_option
@click.option("--port", type=int, help="Port [default 8471].")
@domain_errors
def datasette(data_dir, port) -> None:
    """Serve the hub database read-only with Datasette and the shipped metadata."""
    import os

    from hub.server import datasette_argv, ensure_db, public_url

    s = settings_from(data_dir=data_dir, datasette_port=port)
    ensure_db(s)
    argv = datasette_argv(s, s.datasette_port)
    os.environ.setdefault("HOMELAB_HUB_URL", public_url(s))  # its home page links the hub's pages
    os.execvp(argv[0], argv)


def main() -> None:
    from hub.capabilities import modules

    for m in modules("cli"):
        for cmd in m.COMMANDS:
            cli.add_command(cmd)
    cli()
