"""`homelab-hub notify test` and `homelab-hub notify list`."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import click

from hub.cli import data_dir_option, domain_errors, settings_from
from hub.config import db_path


@click.group()
def notify() -> None:
    """Notifications: apprise URLs (notify_urls), webhooks, Alertmanager."""


async def _test_all(urls: list[str], hooks: list[str], timeout: float) -> list[tuple[str, str | None]]:
    import aiohttp

    from hub.notify import send

    title, body = "homelab: test notification", "If you read this, the hub can reach you."
    out: list[tuple[str, str | None]] = []
    for url in urls:
        err = await send.apprise_send_async(url, title, body, "info", timeout)
        out.append((send.masked(url), err and err[0]))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
        for url in hooks:
            err = await send.post_json(s, url, [{"version": 1, "test": True, "summary": body,
                                                 "sent_at": time.time()}])
            out.append((send.scrub(url.split("?", 1)[0], url), err and err[0]))
    return out


@notify.command("test")
@data_dir_option
@click.option("--timeout", default=20.0, show_default=True, help="Seconds to wait for each target.")
@domain_errors
def test_cmd(data_dir, timeout) -> None:
    """Send one test notification to every configured target now and say which failed.

    Exits 1 if any target failed (or none is configured)."""
    from hub.notify.web import targets_of

    s = settings_from(data_dir=data_dir)
    t = targets_of(s)
    if not (t.apprise or t.webhooks):
        raise click.ClickException("no notify_urls or webhooks configured (docs/notify.md)")
    results = asyncio.run(_test_all(t.apprise, t.webhooks, timeout))
    for target, err in results:
        click.echo(f"{'ok    ' if err is None else 'FAILED'}  {target}" + (f"  ({err})" if err else ""))
    failed = sum(1 for _, e in results if e)
    if failed:
        raise click.ClickException(f"{failed} of {len(results)} target(s) failed")


@notify.command("list")
@data_dir_option
@click.option("--state", type=click.Choice(["pending", "sending", "sent", "failed"]))
@click.option("-n", "--limit", default=50, show_default=True)
@domain_errors
def list_cmd(data_dir, state, limit) -> None:
    """The outbox, newest first: what was sent, what waits, what failed and why."""
    from hub.store import connect

    s = settings_from(data_dir=data_dir)
    path = db_path(s.data_dir)
    if not path.exists():
        raise click.ClickException(f"no hub database at {path}")
    db = connect(path, readonly=True)
    try:
        sql = ("SELECT id, created, channel, topic, severity, state, attempts, title, error"
               " FROM notify_outbox")
        args: list = []
        if state:
            sql += " WHERE state = ?"
            args.append(state)
        rows = db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
    finally:
        db.close()
    for i, created, channel, topic, sev, st, attempts, title, error in rows:
        when = dt.datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{i:>6} {when} {channel:<12} {topic:<8} {sev:<8} {st:<7} x{attempts} {title}"
                   + (f"  [{error}]" if error else ""))


COMMANDS = [notify]
