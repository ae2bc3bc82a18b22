"""Rules on the live hub: load the shipped rules/ and settings.rules_dir, evaluate every
committed event on the rules thread. Notifications (webhooks, Alertmanager, apprise) are
hub.notify's: its alert listener writes them to a durable outbox in the same transaction.

A bad rule file is logged with file, line and key and skipped; the good ones still run.
Alerts are read with ``homelab-hub alerts`` or Datasette; no HTTP route exposes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from hub.keys import ALERT_LISTENERS, SETTINGS, WRITER
from hub.paths import shipped
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
    rules, errors = load_paths(rule_paths(settings))
    for e in errors:
        log.error("rule file skipped: %s", e)
    log.info("rules: %d loaded, %d file error(s)", len(rules), len(errors))
    writer = app[WRITER]
    service = RulesService(rules, writer, app[ALERT_LISTENERS])
    app[SERVICE] = service
    writer.subscribers.append(service.subscriber)
    service.start()
    yield
    with contextlib.suppress(ValueError):
        writer.subscribers.remove(service.subscriber)
    await asyncio.get_running_loop().run_in_executor(None, service.stop)


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_rules)
