"""homelab-agent's entry point. ``run`` with its flags is parsed here; anything else (another
command, ``--help``, a flag it does not know, a missing value) goes to the click commands in
agent/cli_click.py, which print help and errors.

Why not click for ``run`` too: ``run`` is the process that stays up for the node's lifetime
(homelab-agent.service), and click is ~1 MB of imported code in it for flags read once
(argparse would be ~0.3 MB; docs/performance.md). The flags accepted here are exactly
``run``'s click options and mean the same; tests/agent/test_run_cli.py holds the two parsers to
the same results.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime import Agent

VALUED = {"--state-dir": "state_dir", "--watch": "watch", "--log-file": "log_files",
          "--collectors": "collectors", "--metrics-interval": "metrics_interval"}
REPEATED = {"watch", "log_files"}
FLAGS = {"--exec": ("exec_", True), "--no-exec": ("exec_", False),
         "-v": ("verbose", True), "--verbose": ("verbose", True)}


def parse_run(argv: list[str]) -> dict[str, Any] | None:
    """``run``'s keyword arguments for ``start()`` from a command line (without the program
    name), or None when it is not a plain ``run`` this parser is sure of: click then reads it."""
    if not argv or argv[0] != "run":
        return None
    out: dict[str, Any] = {"state_dir": None, "watch": [], "log_files": [], "collectors": None,
                           "metrics_interval": None, "exec_": None, "verbose": False}
    rest = argv[1:]
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg.partition("=")
        if name in VALUED:
            if not eq:
                if not rest or rest[0].startswith("-"):
                    return None  # no value, or one click may read as a flag: its call
                value = rest.pop(0)
            if not value:
                return None  # click's own messages for empty paths and values
            key = VALUED[name]
            if key in REPEATED:
                out[key].append(value)
            else:
                out[key] = Path(value) if key == "state_dir" else value
        elif arg in FLAGS:
            key, flag = FLAGS[arg]
            out[key] = flag
        else:
            return None
    return out


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def start(state_dir: Path | None, watch: list[str], log_files: list[str], collectors: str | None,
          metrics_interval: str | None, exec_: bool | None, verbose: bool) -> Agent:
    """The agent ``run`` runs, configured: raises SettingsError for a bad setting and
    RuntimeError when it cannot run (not joined to a hub)."""
    from .config import load_settings

    _setup_logging(verbose)
    s = load_settings(state_dir=state_dir, watch=watch or None, log_files=log_files or None,
                      collectors=collectors.replace(",", ":").split(":") if collectors else None,
                      metrics_interval=metrics_interval, exec=exec_)
    # before anything imports asyncio or hashlib: they would load OpenSSL (agent/tls.py)
    from .tls import keep_openssl_out, openssl_needed

    needed = openssl_needed(s)
    without = needed is None and keep_openssl_out()
    from .runtime import Agent

    logging.getLogger("agent").debug("OpenSSL %s", "not loaded" if without else f"loaded: {needed or 'imported before run'}")
    return Agent(s)


def main() -> None:
    flags = parse_run(sys.argv[1:])
    if flags is None:
        from .cli_click import cli

        cli()
        return
    from .settings import SettingsError

    try:
        agent = start(**flags)
    except (SettingsError, RuntimeError) as e:
        # the CLI edge, as click would show it: a bad setting is status 2 like a bad flag
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, SettingsError) else 1)
    import asyncio

    asyncio.run(agent.run())
