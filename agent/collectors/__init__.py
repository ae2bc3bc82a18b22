"""The collector contract, shared by every collector (as Salt beacons share theirs).

1. ``unavailable()`` - can I run on this machine? ``None`` if yes, else the reason; the agent
   says so once (a ``notice`` event) and steps the collector aside.
2. ``__init__`` validates the collector's settings and raises ``ValueError`` naming what is wrong.
3. ``async run()`` produces events with ``self.emit(event)``, which never blocks: when the
   agent's queue is full the event is shed and counted.
4. A collector that reads a source from a position (a journal cursor) passes it with the
   event read up to it, ``self.emit(event, at=(key, position))``, and resumes from
   ``self.state.positions.get(key)``. The agent stores the position in the same spool
   transaction as the event, so a ``kill -9`` at any instant neither repeats nor loses one.

Collectors live one per module and are imported only when enabled, which keeps the
agent's memory small on machines that switch most of them off.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, ClassVar

from agent.settings import Settings

REGISTRY: dict[str, str] = {
    "metrics": "agent.collectors.metrics:MetricsCollector",
    "files": "agent.collectors.files:FilesCollector",
    "devices": "agent.collectors.devices:DevicesCollector",
    "packages": "agent.collectors.packages:PackagesCollector",
    "commands": "agent.collectors.commands:CommandsCollector",
    "logs": "agent.collectors.logs:LogsCollector",
    "services": "agent.collectors.services:ServicesCollector",
    "processes": "agent.collectors.processes:ProcessesCollector",
    "inventory": "agent.collectors.inventory:InventoryCollector",
    "sockets": "agent.collectors.sockets:SocketsCollector",
    "checks": "agent.collectors.checks:ChecksCollector",
    "containers": "agent.collectors.containers:ContainersCollector",
}


class Collector:
    name: ClassVar[str] = ""

    def __init__(self, settings: Settings, emit: Callable[..., bool], state: Any):
        self.settings = settings
        self.emit = emit
        self.state = state  # agent.state.State: small persistent key/value store

    @classmethod
    def unavailable(cls, settings: Settings) -> str | None:
        return None

    async def run(self) -> None:
        raise NotImplementedError


def load(name: str) -> type[Collector]:
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown collector {name!r} (known: {', '.join(REGISTRY)})") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)
