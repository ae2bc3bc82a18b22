"""Applies assigned node profiles once their node first reports: the proposals appear for a
person to approve; nothing runs by itself. Polls the tiny node_profiles table, because
`homelab-hub profiles assign` writes it from another process."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from hub.errors import HubError
from hub.keys import READ_DB, SETTINGS, WRITER
from hub.profiles import spec as profiles
from hub.tasks import background

log = logging.getLogger(__name__)
POLL = 5.0


def profiles_dir(settings) -> Path:
    return Path(settings.profiles_dir or settings.data_dir / "profiles")


def apply_due(db, settings) -> list[tuple[str, str, list[int] | str]]:
    """In the writer: create proposals for every due assignment. An assignment that cannot be
    applied (profile missing or invalid) is marked with the error, not retried forever."""
    from hub.playbooks import Registry

    done: list[tuple[str, str, list[int] | str]] = []
    due = profiles.due(db)
    if not due:
        return done
    registry = Registry.from_settings(settings)
    for node, name in due:
        db.execute("SAVEPOINT profile")
        try:
            prof = profiles.find(profiles_dir(settings), name)
            ids = profiles.propose(db, registry, node, prof, actor="hub (profile)",
                                   ttl=getattr(settings, "proposal_ttl", 86400.0))
            db.execute("RELEASE profile")
            profiles.mark_applied(db, node, name, ids)
            done.append((node, name, ids))
        except HubError as e:
            db.execute("ROLLBACK TO profile")
            db.execute("RELEASE profile")
            profiles.mark_applied(db, node, name, None, str(e))
            done.append((node, name, str(e)))
    return done


def _has_table(db) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE name = 'node_profiles'").fetchone() is not None


async def _poll(app: web.Application) -> None:
    settings, writer = app[SETTINGS], app[WRITER]
    while True:
        try:
            # a read first: the writer is only asked when something is due
            due = profiles.due(app[READ_DB]) if _has_table(app[READ_DB]) else []
            for node, name, out in (await writer.run(lambda db: apply_due(db, settings)) if due else []):
                if isinstance(out, str):
                    log.warning("profile %s for node %s not applied: %s", name, node, out)
                else:
                    log.info("profile %s for node %s: proposals %s await approval", name, node, out)
        except Exception:  # noqa: BLE001 - try again next round; never take the hub down
            log.exception("applying node profiles failed")
        await asyncio.sleep(POLL)


def setup(app: web.Application) -> None:
    background(app, _poll, "profiles")
