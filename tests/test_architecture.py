"""The layout docs/architecture.md describes is the layout the code has.

- every capability package is in the registry, provides exactly the hooks it declares, and is
  described in docs/architecture.md, as is every hook;
- code outside a capability imports only its public ``__init__``, never its modules (the
  core reaches their hooks through the registry);
- the agent never imports the hub;
- a capability has one name: its package, its CLI group, its page in docs/ and its settings'
  prefix (the old spellings stay as hidden aliases that say the new one).
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hub.capabilities import CAPABILITIES, HOOKS

ROOT = Path(__file__).resolve().parent.parent
HUB = ROOT / "hub"
DOC = (ROOT / "docs" / "architecture.md").read_text()
NAMES = {c.name for c in CAPABILITIES}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in ``path`` loads, as (line, dotted name)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            for a in node.names:  # `from hub.x import y` loads hub.x.y when y is a module
                sub = f"{node.module}.{a.name}"
                if (ROOT / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    ROOT / Path(*sub.split(".")) / "__init__.py"
                ).exists():
                    out.append((node.lineno, sub))
        elif isinstance(node, ast.ImportFrom) and node.level:
            out.append((node.lineno, "." * node.level + (node.module or "")))
    return out


def test_every_package_under_hub_is_a_registered_capability():
    packages = {p.parent.name for p in HUB.glob("*/__init__.py")}
    assert packages == NAMES, f"unregistered: {packages - NAMES}; missing: {NAMES - packages}"


@pytest.mark.parametrize("cap", CAPABILITIES, ids=lambda c: c.name)
def test_capability_provides_exactly_the_hooks_it_declares(cap):
    for hook, spec in HOOKS.items():
        exists = (HUB / cap.name / f"{hook}.py").exists()
        assert exists == (hook in cap.hooks), f"hub/{cap.name}/{hook}.py vs declared {cap.hooks}"
        if hook in cap.hooks and spec.provides.isidentifier():
            assert hasattr(importlib.import_module(cap.module(hook)), spec.provides)
        elif hook in cap.hooks and "(" in spec.provides:
            assert callable(getattr(importlib.import_module(cap.module(hook)),
                                    spec.provides.split("(")[0]))


def test_every_capability_and_hook_is_documented():
    for cap in CAPABILITIES:
        assert f"`{cap.name}`" in DOC, f"docs/architecture.md does not describe {cap.name}"
    for hook, spec in HOOKS.items():
        assert f"`{hook}.py`" in DOC and spec.provides in DOC, f"hook {hook} undocumented"


def test_views_have_one_definition_and_no_migration_makes_one():
    import inspect

    from hub.schema import all_migrations, all_views

    assert "`VIEWS`" in DOC
    assert all_views()  # and no two modules define the same view (all_views refuses)
    for fn in all_migrations():
        assert not re.search(r"\b(CREATE|DROP)\s+VIEW\b", inspect.getsource(fn), re.I), (
            f"{fn.__name__} makes a view: define it once in its module's VIEWS instead")


def _owner(path: Path) -> str:
    rel = path.relative_to(HUB).parts
    return rel[0] if len(rel) > 1 else "<core>"


@pytest.mark.parametrize("path", sorted(HUB.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_respect_capability_boundaries(path):
    owner = _owner(path)
    bad = []
    for line, mod in _imports(path):
        if mod.startswith("."):
            continue  # relative imports stay inside their own package
        parts = mod.split(".")
        if parts[0] != "hub" or len(parts) < 2 or parts[1] not in NAMES or parts[1] == owner:
            continue
        if len(parts) > 2:
            bad.append(f"line {line}: {mod}")
    assert not bad, (f"{path.relative_to(ROOT)} reaches into another capability "
                     f"(import its public hub.<name> instead): {bad}")


def test_the_agent_never_imports_the_hub():
    offenders = [
        f"{p.relative_to(ROOT)}:{line} imports {mod}"
        for p in sorted((ROOT / "agent").rglob("*.py"))
        for line, mod in _imports(p)
        if mod == "hub" or mod.startswith("hub.")
    ]
    assert not offenders, offenders


# -- one name per capability ---------------------------------------------------------------

def _commands(cap) -> list[click.Command]:
    """What the capability adds to `homelab-hub --help` (its deprecated aliases are hidden)."""
    if "cli" not in cap.hooks:
        return []
    return [c for c in importlib.import_module(cap.module("cli")).COMMANDS if not c.hidden]


def _pages() -> dict[str, str]:
    """Each capability's page in docs/, from the capability table of docs/architecture.md."""
    rows = re.findall(r"^\| `([a-z]+)` \|.*\[([a-z-]+)\.md\]\([a-z-]+\.md\) \|$", DOC, re.M)
    return dict(rows)


def _core_commands() -> set[str]:
    from hub.cli import cli

    added = {c.name for cap in CAPABILITIES for c in _commands(cap)}
    return set(cli.commands) - added


def test_a_capabilitys_cli_group_is_named_after_it():
    owner = {}
    for cap in CAPABILITIES:
        groups = [c.name for c in _commands(cap) if isinstance(c, click.Group)]
        assert not groups or cap.name in groups, (
            f"{cap.name} adds the CLI groups {groups}, none named {cap.name}")
        for c in _commands(cap):
            owner[c.name] = cap.name
    strays = {n: o for n, o in owner.items() if n in NAMES and n != o}
    assert not strays, f"commands named after another capability: {strays}"


def test_a_capabilitys_page_is_named_after_it():
    pages = _pages()
    assert set(pages) == NAMES, f"docs/architecture.md rows without a page: {NAMES - set(pages)}"
    for cap, page in pages.items():
        assert (ROOT / "docs" / f"{page}.md").exists(), f"{cap}: docs/{page}.md is missing"
        sharing = sorted(c for c, p in pages.items() if p == page)
        if sharing == [cap]:  # a page of its own
            assert page == cap, f"docs/{page}.md documents {cap} alone: name it docs/{cap}.md"
        if page in NAMES:
            assert page in sharing, f"docs/{page}.md is named after {page} but documents {sharing}"
    for cap in NAMES:  # a capability with a page of its name is documented there
        if (ROOT / "docs" / f"{cap}.md").exists():
            assert pages[cap] == cap, f"{cap} is documented in {pages[cap]}.md, not docs/{cap}.md"


def test_a_settings_prefix_that_names_something_names_its_capability():
    """`docs_dir` next to a `selfdocs` package was the drift: a prefix that is also a CLI group,
    a docs page or a package is one capability's single name (or the core's own command)."""
    from hub.config import HUB_OPTS

    nouns = NAMES | set(_pages().values()) | {
        c.name for cap in CAPABILITIES for c in _commands(cap) if isinstance(c, click.Group)}
    core = _core_commands()
    for o in HUB_OPTS:
        prefix = o.key.split("_")[0]
        if prefix in nouns and prefix != o.key:
            assert prefix in NAMES or prefix in core, (
                f"setting {o.key}: {prefix} is a user-facing name but no capability's")


# (old spelling, new spelling, the rest of a command line that reaches the command)
OLD_SPELLINGS = [("profile", "profiles", ["list"]),
                 ("export ansible", "ansible export", ["nobody", "-o", "x"]),
                 ("drift", "ansible drift", ["nobody"])]


def _hub_cli() -> click.Group:
    from hub.capabilities import modules
    from hub.cli import cli

    for m in modules("cli"):
        for c in m.COMMANDS:
            cli.add_command(c)
    return cli


@pytest.mark.parametrize("old,new,rest", OLD_SPELLINGS, ids=lambda a: a if isinstance(a, str) else "")
def test_old_spellings_work_and_say_the_new_one(tmp_path, old, new, rest):
    runner = CliRunner()
    rest = [*rest, "--data-dir", str(tmp_path)]
    was = runner.invoke(_hub_cli(), [*old.split(), *rest])
    now = runner.invoke(_hub_cli(), [*new.split(), *rest])
    assert (was.exit_code, was.stdout) == (now.exit_code, now.stdout)
    assert was.stderr == (f"warning: `homelab-hub {old}` is deprecated; use `homelab-hub {new}`\n"
                          + now.stderr)
    top = runner.invoke(_hub_cli(), ["--help"]).stdout
    assert f" {old.split()[0]} " not in top and f" {new.split()[0]} " in top
