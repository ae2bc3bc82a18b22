"""The layout docs/architecture.md describes is the layout the code has.

- every capability package is in the registry, provides exactly the hooks it declares, and is
  described in docs/architecture.md, as is every hook;
- code outside a capability imports only its public ``__init__``, never its modules (the
  core reaches their hooks through the registry);
- the agent never imports the hub.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

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
