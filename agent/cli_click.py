"""homelab-agent's click commands: everything but a plain ``run``, which agent/cli.py parses
itself so that the running agent never imports click (see there). ``run`` is here too, for
its ``--help``, its errors and the docs' command reference."""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import __version__
from .config import load_settings, state_dir_of
from .settings import SettingsError


class BadSetting(click.ClickException):
    """A setting with a value the agent cannot run with: exit status 2, as for a bad flag."""

    exit_code = 2


def _settings(**flags):
    try:
        return load_settings(**flags)
    except SettingsError as e:
        raise BadSetting(str(e)) from None


state_dir_opt = click.option("--state-dir", type=click.Path(path_type=Path), help="State directory [$HOMELAB_AGENT_STATE_DIR].")


@click.group()
@click.version_option(__version__)
def cli() -> None:
    """The Sentient Homelab node agent: collects events and ships them to the hub."""


@cli.command()
@click.argument("hub_url")
@click.argument("token")
@state_dir_opt
@click.option("--fingerprint", help="SHA256:... of the hub's own TLS certificate (printed by enroll); it is pinned.")
def join(hub_url: str, token: str, state_dir: Path | None, fingerprint: str | None) -> None:
    """Join the hub at HUB_URL with a one-time TOKEN from `homelab-hub enroll`."""
    import asyncio

    from .join import join_and_save

    sd = state_dir_of(state_dir)
    try:
        node = asyncio.run(join_and_save(hub_url, token, sd, fingerprint))
    except Exception as e:  # noqa: BLE001 - the CLI edge: say what went wrong
        raise click.ClickException(f"join failed: {e}") from None
    click.echo(f"joined {hub_url} as node {node!r}; state in {sd}")
    click.echo("start shipping with: homelab-agent run" + (f" --state-dir {sd}" if state_dir else ""))


@cli.command()
@state_dir_opt
@click.option("--watch", multiple=True, help="Path to watch for file changes (repeatable) [$HOMELAB_AGENT_WATCH].")
@click.option("--log-file", "log_files", multiple=True, help="Log file to tail (repeatable) [$HOMELAB_AGENT_LOG_FILES].")
@click.option("--collectors", help="Comma-separated collectors to run [$HOMELAB_AGENT_COLLECTORS].")
@click.option("--metrics-interval", help="Seconds between metric samples [$HOMELAB_AGENT_METRICS_INTERVAL].")
@click.option("--exec/--no-exec", "exec_", default=None, help="Allow approved playbooks to run [$HOMELAB_AGENT_EXEC].")
@click.option("-v", "--verbose", is_flag=True)
def run(state_dir, watch, log_files, collectors, metrics_interval, exec_, verbose) -> None:
    """Collect and ship events (what homelab-agent.service runs)."""
    import asyncio

    from .cli import start

    try:
        agent = start(state_dir=state_dir, watch=list(watch), log_files=list(log_files),
                      collectors=collectors, metrics_interval=metrics_interval, exec_=exec_,
                      verbose=verbose)
    except SettingsError as e:
        raise BadSetting(str(e)) from None
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    asyncio.run(agent.run())


@cli.command()
@state_dir_opt
@click.option("--json", "as_json", is_flag=True)
def status(state_dir, as_json) -> None:
    """Show this agent's identity and spool backlog."""
    from .spool import Spool

    s = _settings(state_dir=state_dir)
    spool_path = s.state_dir / "spool.db"
    info = {"state_dir": str(s.state_dir), "hub_url": s.hub_url, "node": s.node,
            "spooled_events": 0, "spooled_bytes": 0, "exec": s.exec}
    if spool_path.exists():
        sp = Spool(spool_path, s.spool_max_bytes)
        info["spooled_events"], info["spooled_bytes"] = len(sp), sp.bytes
        sp.close()
    if as_json:
        click.echo(json.dumps(info))
    else:
        for k, v in info.items():
            click.echo(f"{k:16} {v}")


@cli.command("shell-hook")
@click.argument("shell", type=click.Choice(["bash", "zsh"]))
@state_dir_opt
@click.option("--socket", type=click.Path(path_type=Path), help="The agent's command socket [$HOMELAB_AGENT_SOCKET].")
def shell_hook(shell, state_dir, socket) -> None:
    """Print the SHELL snippet that reports commands to this agent (for /etc/profile.d or an rc file)."""
    from .collectors.commands import socket_path
    from .shellhook import snippet

    s = _settings(state_dir=state_dir, socket=socket)
    click.echo(snippet(shell, str(socket_path(s).absolute())), nl=False)

