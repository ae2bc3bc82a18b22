"""Rules on the live hub: load the shipped rules/ and settings.rules_dir, evaluate every
committed event on the rules thread, and notify webhooks and Alertmanager.

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
from hub.playbooks.registry import Registry
from hub.rules.loader import load_paths
from hub.rules.notify import Notifier
from hub.rules.service import RulesService

log = logging.getLogger(__name__)

SERVICE = web.AppKey("rules_service", RulesService)
NOTIFIER = web.AppKey("rules_notifier", Notifier)


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
    from hub.server import public_url

    notifier = Notifier(settings.webhooks or [], settings.alertmanager_url, public_url(settings))
    notifier._loop = asyncio.get_running_loop()
    app[NOTIFIER] = notifier
    notify_task = asyncio.create_task(notifier.run()) if notifier.enabled else None
    writer = app[WRITER]
    service = RulesService(rules, writer, app[ALERT_LISTENERS], on_records=notifier.submit_threadsafe,
                           loader=load)
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
    if notify_task is not None:
        notify_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await notify_task


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_rules)
