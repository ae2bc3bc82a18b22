"""Rules on the live hub: load the shipped rules/ and settings.rules_dir, evaluate every
committed event on the rules thread. Notifications (webhooks, Alertmanager, apprise) are
hub.notify's: its alert listener writes them to a durable outbox in the same transaction.

A bad rule file (also one naming a playbook that is not installed, or a parameter the
playbook does not declare) is logged with file, line and key and skipped; the good ones run.
Alerts are read with ``homelab-hub alerts`` or Datasette; no HTTP route exposes them.
``homelab-hub rules reload`` or SIGHUP loads the rule files again: all valid, or none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from hub.keys import ALERT_LISTENERS, SETTINGS, WRITER
from hub.paths import shipped
from hub.playbooks import Registry
from hub.rules.loader import load_paths
from hub.rules.service import RulesService

log = logging.getLogger(__name__)

SERVICE = web.AppKey("rules_service", RulesService)


def rule_paths(settings) -> list[Path]:
    paths = [shipped("rules")]
    if getattr(settings, "rules_dir", None):
        paths.append(Path(settings.rules_dir))
    return paths


async def _rules(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    registry = Registry.from_settings(settings)

    def load():
        return load_paths(rule_paths(settings), registry.all())

    rules, errors = load()
    for e in errors:
        log.error("rule file skipped: %s", e)
    log.info("rules: %d loaded, %d file error(s)", len(rules), len(errors))
    writer = app[WRITER]
    service = RulesService(rules, writer, app[ALERT_LISTENERS], loader=load)
    app[SERVICE] = service
    writer.subscribers.append(service.subscriber)
    service.start()
    loop = asyncio.get_running_loop()
    hup = False
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread
        loop.add_signal_handler(signal.SIGHUP, service.reload_wanted.set)
        hup = True
    yield
    if hup:
        loop.remove_signal_handler(signal.SIGHUP)
    with contextlib.suppress(ValueError):
        writer.subscribers.remove(service.subscriber)
    await asyncio.get_running_loop().run_in_executor(None, service.stop)


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_rules)
