"""Regenerate the reference parts of docs/settings.md and docs/cli.md from the code.

    .venv/bin/python docs/generate.py          # rewrite
    .venv/bin/python docs/generate.py --check  # exit 1 if the docs are stale (the tests do this)

Only the text between the GENERATED markers is replaced; the prose around it is kept.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

DOCS = Path(__file__).resolve().parent
BEGIN, END = "<!-- GENERATED: do not edit below; run docs/generate.py -->", "<!-- END GENERATED -->"


def _default(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, list):
        return ", ".join(f"`{x}`" for x in v) or "(empty)"
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return f"`{v}`"


def settings_table(opts, config_file: str) -> str:
    rows = [f"Config file: `{config_file}` (TOML, keys as below).\n",
            "| key (config file) | flag | environment | default | meaning |", "|---|---|---|---|---|"]
    for o in opts:
        rows.append(f"| `{o.key}` | {f'`{o.flag}`' if o.flag else ''} | `{o.env}` | {_default(o.default)} | {o.help} |")
    return "\n".join(rows)


def settings() -> str:
    from agent.config import AGENT_OPTS
    from hub.config import HUB_OPTS

    return "\n\n".join([
        "## homelab-hub\n", settings_table(HUB_OPTS, "$HOMELAB_HUB_CONFIG or DATA_DIR/hub.toml"),
        "## homelab-agent\n", settings_table(AGENT_OPTS, "$HOMELAB_AGENT_CONFIG or STATE_DIR/agent.toml"),
    ])


def _walk(cmd: click.Command, path: list[str], out: list[str]) -> None:
    ctx = click.Context(cmd, info_name=" ".join(path))
    if path[1:]:
        out.append(f"### `{' '.join(path)}`\n\n```\n{cmd.get_help(ctx).strip()}\n```\n")
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.list_commands(ctx)):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:  # deprecated spellings stay out of the reference
                _walk(sub, [*path, name], out)


def cli_reference() -> str:
    from agent.cli_click import cli as agent_cli
    from hub.capabilities import modules
    from hub.cli import cli as hub_cli

    for m in modules("cli"):
        for c in m.COMMANDS:
            hub_cli.add_command(c)
    out: list[str] = []
    _walk(hub_cli, ["homelab-hub"], out)
    _walk(agent_cli, ["homelab-agent"], out)
    return "\n".join(out)


def all_commands() -> list[str]:
    """Every command path, e.g. 'homelab-hub rules check' (used by the docs test)."""
    return [line[5:-1] for line in cli_reference().splitlines() if line.startswith("### `")]


def splice(path: Path, body: str) -> str:
    text = path.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n\n{body}\n\n{END}{tail}"


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for name, body in (("settings.md", settings()), ("cli.md", cli_reference())):
        path = DOCS / name
        new = splice(path, body)
        if new != path.read_text():
            stale.append(name)
            if not check:
                path.write_text(new)
    if check and stale:
        print(f"stale: {', '.join(stale)}; run: python docs/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
