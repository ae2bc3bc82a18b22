"""The hub's one extension contract: what a capability may provide, and which capabilities exist.

A capability is a package ``hub/<name>/`` that owns one thing the hub does (its domain code,
web routes, CLI commands and tables). It plugs into the core only through the hooks below,
each a module of a fixed name inside the package. Nothing is discovered by scanning folders:
``CAPABILITIES`` is the whole list, in the order the hooks run (the web hooks' order is the
order of their start-up; the backup lock comes first so nothing starts on a data directory
another hub holds). docs/architecture.md describes each hook; a test keeps the two in step.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Hook:
    module: str  # the module's name inside the capability package
    provides: str  # what that module must define
    what: str


HOOKS: dict[str, Hook] = {h.module: h for h in (
    Hook("schema", "MIGRATIONS",
         "its tables: named migrations from `hub.schema.migration_set()`; all run in name order "
         "on open, keyed by name alone. Its views, if any: `VIEWS`, name -> SELECT, one "
         "definition each, (re)created after the migrations whenever the stored SQL differs"),
    Hook("project", "@hub.project.handles",
         "event handlers that fill its tables inside the writer's transaction (ingest's hot path)"),
    Hook("web", "setup(app)",
         "wiring into the running hub: HTTP routes, middlewares, background tasks "
         "(`hub.tasks.background`), commit subscribers (`app[WRITER].subscribers`) and alert "
         "listeners (`app[ALERT_LISTENERS]`)"),
    Hook("cli", "COMMANDS",
         "click commands and groups added to `homelab-hub`"),
)}


@dataclass(frozen=True)
class Capability:
    name: str
    summary: str
    hooks: tuple[str, ...]

    def module(self, hook: str) -> str:
        return f"hub.{self.name}.{hook}"


CAPABILITIES: tuple[Capability, ...] = (
    Capability("backup", "backup and restore; the data-directory lock", ("web", "cli")),
    Capability("onboarding", "the bootstrap script, agent wheel and wheelhouse for new nodes",
               ("web",)),
    Capability("brain", "the local model: proposing, ask, explain, digest",
               ("schema", "web", "cli")),
    Capability("kb", "the knowledge base", ("schema", "web", "cli")),
    Capability("loki", "log forwarding to Loki", ("web",)),
    Capability("metrics", "Prometheus exposition of the fleet and the hub", ("web",)),
    Capability("profiles", "node profiles, applied as proposals", ("schema", "web", "cli")),
    Capability("proposals", "proposals, approvals, signed jobs and their results",
               ("schema", "web", "cli")),
    Capability("rules", "YAML rules, alerts, notifications", ("schema", "web", "cli")),
    Capability("notify", "notifications to people through apprise, from a durable outbox",
               ("schema", "web", "cli")),
    Capability("checks", "active checks (HTTP, TCP, TLS, DNS) run by the hub and the agents",
               ("schema", "project", "web")),
    Capability("containers", "Docker and Podman containers on the nodes", ("schema", "project")),
    Capability("docs", "node pages written from the twin", ("web", "cli")),
    Capability("tailnet", "Tailscale identity and device sync", ("web", "cli")),
    Capability("twin", "each node's current state and its history", ("schema", "project", "cli")),
    Capability("ansible", "the Ansible export and drift; the configuration baseline it starts from",
               ("schema", "project", "cli")),
    Capability("playbooks", "the playbook registry the hub may propose from", ("cli",)),
    Capability("dashboard", "the hub's home page and node pages with history",
               ("schema", "web", "cli")),
)


def modules(hook: str) -> list[ModuleType]:
    """The hook's module of every capability that provides it, in registry order."""
    if hook not in HOOKS:
        raise KeyError(f"no hook {hook!r} (hooks: {', '.join(HOOKS)})")
    return [importlib.import_module(c.module(hook)) for c in CAPABILITIES if hook in c.hooks]
