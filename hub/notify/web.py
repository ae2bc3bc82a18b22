"""Notifications on the running hub: the alert listener that fills the outbox inside the rules
engine's transaction, and the courier task that empties it (hub.notify.deliver)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from agent.settings import Settings, SettingsError
from hub.keys import ALERT_LISTENERS, SETTINGS, WRITER
from hub.notify import outbox, send
from hub.notify.deliver import Courier

log = logging.getLogger(__name__)

COURIER = web.AppKey("notify_courier", Courier)


def targets_of(settings: Settings) -> outbox.Targets:
    """The configured targets; raises SettingsError naming a URL apprise cannot use."""
    from hub.server import public_url

    urls = list(getattr(settings, "notify_urls", None) or [])
    for i, url in enumerate(urls):
        try:
            send.check_url(url)
        except ValueError as e:
            raise SettingsError(f"notify_urls[{i}]: {e}") from None
    return outbox.Targets(
        apprise=urls, webhooks=list(settings.webhooks or []),
        alertmanager=settings.alertmanager_url, min_severity=settings.notify_min_severity,
        group_wait=settings.notify_group_wait, generator_url=public_url(settings))


async def _notify(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    t = targets_of(settings)
    if not t.enabled:
        yield
        return
    courier = Courier(app[WRITER], t, rate=settings.notify_rate_limit, keep=settings.event_retention)
    app[COURIER] = courier
    on_alert = outbox.listener(t)
    app[ALERT_LISTENERS].append(on_alert)
    task = asyncio.create_task(courier.run(), name="notify")
    yield
    # stop by flag, so a send in flight finishes and is recorded (sent once); cancel only
    # as a fallback for a receiver that hangs past every timeout
    courier.stopping.set()
    await asyncio.wait({task}, timeout=courier.timeout + 5)
    if not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=5)
    with contextlib.suppress(ValueError):
        app[ALERT_LISTENERS].remove(on_alert)


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_notify)
