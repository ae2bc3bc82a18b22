"""The hub's three extension points, one package each, discovered by name:

- ``hub/commands/*.py`` expose ``COMMANDS``: click commands/groups added to ``homelab-hub``.
- ``hub/features/*.py`` expose ``setup(app)``: add routes, ``cleanup_ctx`` tasks, commit subscribers.
- ``hub/projections/*.py`` register event handlers with ``hub.project.handles``.

A feature is one module in each package it needs; nothing else has to be edited to add it.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def modules(package: str) -> list[ModuleType]:
    pkg = importlib.import_module(package)
    return [
        importlib.import_module(f"{package}.{m.name}")
        for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name)
        if not m.name.startswith("_")
    ]
