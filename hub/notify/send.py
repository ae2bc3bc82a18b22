"""Senders: apprise for people (ntfy, Gotify, email, Matrix, ...), plain JSON POST for webhooks
and Alertmanager. Each returns None when delivered, else (error, permanent)."""

from __future__ import annotations

import asyncio
import functools
import logging
import warnings
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

NOTIFY_TYPES = {"info": "info", "warning": "warning", "critical": "failure", "resolved": "success"}


@functools.cache
def _apprise():
    # apprise loads its ~130 plugins lazily on first use; one of them imports the deprecated
    # imghdr module, which the test suite's filterwarnings=error would turn into a failure
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise
        from apprise.manager_plugins import NotificationManager

        NotificationManager().load_modules()
    return apprise


def check_url(url: str) -> str:
    """The URL with its secrets masked; raises ValueError when apprise cannot use it."""
    plugin = _apprise().Apprise.instantiate(url, suppress_exceptions=True)
    if plugin is None:
        scheme = url.split("://", 1)[0] if "://" in url else url[:12]
        raise ValueError(f"not an apprise URL apprise can use (scheme {scheme!r}); "
                         "see https://github.com/caronc/apprise/wiki")
    return plugin.url(privacy=True).split("?", 1)[0]  # the query is apprise's defaults: noise


def scrub(text: str, url: str) -> str:
    """An error message without the URL's secrets (they may echo it back; errors are stored
    in notify_outbox, which Datasette shows): its password, user, and long path or query parts."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    from agent.redact import redact

    u = urlsplit(url)
    parts = [u.password, u.username, *u.path.split("/"), *(v for _, v in parse_qsl(u.query))]
    # a token in the host place (tgram://BOT_ID:TOKEN/...): long pieces only, names stay
    parts += [p for p in u.netloc.rpartition("@")[2].split(":") if len(p) >= 20]
    for p in sorted({unquote(p) for p in parts if p and len(p) >= 6} | {p for p in parts if p and len(p) >= 6},
                    key=len, reverse=True):
        text = text.replace(p, "***")
    return redact(text)[0]


def masked(url: str) -> str:
    try:
        return check_url(url)
    except ValueError:
        return url.split("://", 1)[0] + "://…"


def apprise_send(url: str, title: str, body: str, kind: str) -> tuple[str, bool] | None:
    """Blocking (apprise's plugins use requests and smtplib): call it in a thread."""
    ap = _apprise()
    a = ap.Apprise()
    if not a.add(url):
        return f"apprise cannot use {masked(url)}", True
    # apprise says why a send failed only in its log: capture it, to give the reason
    with ap.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
        ok = a.notify(title=title, body=body, notify_type=NOTIFY_TYPES.get(kind, "info"))
    if ok:
        return None
    lines = [ln.strip() for ln in captured.getvalue().splitlines() if ln.strip()]
    return scrub(lines[-1][:300] if lines else "not delivered", url), False


async def post_json(s: aiohttp.ClientSession, url: str, body: Any) -> tuple[str, bool] | None:
    try:
        async with s.post(url, json=body) as r:
            if r.status < 300:
                return None
            text = (await r.text())[:200]
            # a 4xx other than 429 will not change its mind on retry
            return scrub(f"HTTP {r.status}: {text}", url), 400 <= r.status < 500 and r.status != 429
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        return scrub(f"{type(e).__name__}: {e}", url), False


async def apprise_send_async(url: str, title: str, body: str, kind: str, timeout: float):
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.to_thread(apprise_send, url, title, body, kind)
    except TimeoutError:
        return f"{masked(url)}: no answer in {timeout:.0f}s", False
