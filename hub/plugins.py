"""The hub's extension points, as explicit ordered lists (no discovery by scanning folders):

- ``COMMANDS``: modules exposing ``COMMANDS``, click commands/groups added to ``homelab-hub``.
- ``FEATURES``: modules exposing ``setup(app)``: routes, ``cleanup_ctx`` tasks, commit subscribers.
- ``PROJECTIONS``: modules registering event handlers with ``hub.project.handles``.

The order is the order they run in.
"""

from __future__ import annotations

import importlib
from types import ModuleType

COMMANDS = [
    "hub.backup.cli", "hub.brain.cli", "hub.selfdocs.cli", "hub.ansible.cli", "hub.kb.cli",
    "hub.notify.cli", "hub.playbooks.cli", "hub.profiles.cli", "hub.proposals.cli", "hub.rules.cli",
    "hub.tailnet.cli", "hub.twin.cli",
]
FEATURES = [
    "hub.backup.web", "hub.checks.web", "hub.onboarding.web", "hub.brain.web", "hub.kb.web", "hub.loki.web",
    "hub.metrics.web", "hub.notify.web", "hub.profiles.web", "hub.proposals.web", "hub.rules.web",
    "hub.selfdocs.web", "hub.tailnet.web",
]
PROJECTIONS = ["hub.twin.activity", "hub.twin.project", "hub.checks.project",
               "hub.containers.project", "hub.ansible.baseline"]


def modules(names: list[str]) -> list[ModuleType]:
    return [importlib.import_module(n) for n in names]
SCHEMAS = [
    "hub.twin.schema", "hub.rules.schema", "hub.proposals.schema", "hub.brain.schema",
    "hub.kb.schema", "hub.ansible.schema", "hub.profiles.schema", "hub.notify.schema",
    "hub.checks.schema", "hub.containers.schema",
]
