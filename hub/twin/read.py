"""The twin's one read API: what a node is now, and what changed, for every reader.

The CLI (`twin`, `changes`), the node pages, the Ansible export and the brain's context all
read the twin through ``Twin``, so a column or a table moves in one place. Each method is one
indexed query on a connection the caller owns (read-only or the writer's); nothing is cached.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from hub.nodes import require_node

CHANGE_KINDS = ("package", "file", "service", "device")
LISTED_UNITS = ("enabled", "static", "alias", "indirect")  # what a node page calls its services


def _rows(db: sqlite3.Connection, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
    return [dict(r) for r in db.execute(sql, args)]


# How full a mount is lives in metrics (the latest disk_used_ratio{mount="..."} sample), not
# in the inventory's mounts table, which says only how big it is.
MOUNT_USAGE_SQL = (
    "SELECT m.node, m.mountpoint, m.device, m.fstype, m.options, m.total_bytes, l.value AS used_ratio"
    " FROM mounts m LEFT JOIN metrics_latest l ON l.node = m.node AND l.name = 'disk_used_ratio'"
    " AND l.labels = 'mount=\"' || m.mountpoint || '\"'"
)


def mount_usage(db: sqlite3.Connection, node: str | None = None) -> list[dict[str, Any]]:
    """Every mount (of ``node``, or of every node) with ``used_ratio`` (None: no sample yet)."""
    where = " WHERE m.node = ?" if node is not None else ""
    return _rows(db, MOUNT_USAGE_SQL + where + " ORDER BY m.node, m.mountpoint",
                 (node,) if node is not None else ())


def changes(db: sqlite3.Connection, node: str | None, since: float,
            kinds: tuple[str, ...] = CHANGE_KINDS, limit: int = 10_000,
            newest_first: bool = False) -> list[dict[str, Any]]:
    """Changes (packages, files, services, devices) since ``since``; every node's when
    ``node`` is None. Oldest first unless ``newest_first``."""
    if node is not None:
        require_node(db, node)
    marks = ", ".join("?" * len(kinds))
    where = "node = ? AND " if node is not None else ""
    order = "ts DESC, node, seq DESC" if newest_first else "ts, node, seq"
    return _rows(db, f"SELECT node, ts, time, kind, subject, action, detail FROM changes"
                     f" WHERE {where}ts >= ? AND kind IN ({marks}) ORDER BY {order} LIMIT ?",
                 (*([node] if node is not None else []), since, *kinds, limit))


class Twin:
    """One node's twin. Raises NotFound (naming the closest node) for an unknown node."""

    def __init__(self, db: sqlite3.Connection, node: str):
        require_node(db, node)
        self.db, self.node = db, node

    def _all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return _rows(self.db, sql, (self.node, *args))

    def inventory(self) -> dict[str, Any] | None:
        r = self.db.execute("SELECT * FROM inventory WHERE node = ?", (self.node,)).fetchone()
        if r is None:
            return None
        inv = dict(r)
        inv["facts"] = json.loads(inv["facts"]) if inv.get("facts") else {}
        return inv

    def interfaces(self) -> list[dict[str, Any]]:
        return self._all("SELECT name, mac, mtu, up, speed_mbps, addresses FROM interfaces"
                         " WHERE node = ? ORDER BY name")

    def mounts(self) -> list[dict[str, Any]]:
        """Mounts with their size and ``used_ratio`` (the latest sample; None before one)."""
        return mount_usage(self.db, self.node)

    def disks(self) -> list[dict[str, Any]]:
        return self._all("SELECT name, size_bytes, model, serial, rotational, removable FROM disks"
                         " WHERE node = ? ORDER BY name")

    def packages(self, *, manual_only: bool = False, removed: bool = False) -> list[dict[str, Any]]:
        """Installed packages by manager and name; ``manual_only``: those installed by hand (or
        not known yet); ``removed``: removed and purged ones too."""
        where = "" if removed else " AND state = 'installed'"
        if manual_only:
            where += " AND coalesce(manual, 1)"
        return self._all("SELECT manager, name, arch, version, manual, state, changed FROM packages"
                         f" WHERE node = ?{where} ORDER BY manager, name, arch")

    def package_counts(self) -> dict[str, int]:
        r = self.db.execute(
            "SELECT count(*) FILTER (WHERE state = 'installed'),"
            " count(*) FILTER (WHERE state = 'installed' AND manual),"
            " count(*) FILTER (WHERE state != 'installed') FROM packages WHERE node = ?",
            (self.node,)).fetchone()
        return {"installed": r[0], "manual": r[1], "removed": r[2]}

    def package_changes(self, limit: int = -1) -> list[dict[str, Any]]:
        return self._all("SELECT ts, manager, action, name, arch, version, old_version, user, command"
                         " FROM package_changes WHERE node = ? ORDER BY ts DESC, seq DESC LIMIT ?",
                         limit)

    def pending_updates(self, limit: int = -1) -> list[dict[str, Any]]:
        return self._all("SELECT manager, name, current, candidate, security, checked"
                         " FROM pending_updates WHERE node = ? ORDER BY security DESC, name LIMIT ?",
                         limit)

    def pending_counts(self) -> dict[str, int]:
        r = self.db.execute("SELECT count(*), coalesce(sum(security), 0) FROM pending_updates"
                            " WHERE node = ?", (self.node,)).fetchone()
        return {"total": r[0], "security": r[1]}

    def services(self, *, listed: bool = False, enabled: bool = False,
                 failed: bool = False, limit: int = -1) -> list[dict[str, Any]]:
        """Units, failed first. ``listed``: enabled, static, alias or indirect ones and failed
        ones (what a node page shows); ``enabled``: only enabled; ``failed``: only failed."""
        where = ""
        if listed:
            where = f" AND (enabled IN {LISTED_UNITS!r} OR active = 'failed')"
        if enabled:
            where += " AND enabled = 'enabled'"
        if failed:
            where += " AND active = 'failed'"
        return self._all("SELECT unit, active, sub, result, restarts, enabled, changed FROM services"
                         f" WHERE node = ?{where} ORDER BY active = 'failed' DESC, unit LIMIT ?", limit)

    def devices(self, limit: int = -1) -> list[dict[str, Any]]:
        return self._all("SELECT sys_path, subsystem, devtype, dev_node, vendor, model, serial, driver,"
                         " present, changed FROM devices WHERE node = ? AND present"
                         " ORDER BY subsystem, sys_path LIMIT ?", limit)

    def processes(self, limit: int = -1) -> list[dict[str, Any]]:
        return self._all("SELECT pid, name, user, cpu_percent, rss_bytes, cmdline, ts FROM processes"
                         " WHERE node = ? ORDER BY rank LIMIT ?", limit)

    def files(self) -> list[dict[str, Any]]:
        """Watched files that exist now."""
        return self._all("SELECT path, size, mode, uid, gid, sha256, secret, changed FROM files"
                         " WHERE node = ? AND deleted = 0 ORDER BY path")

    def file_counts(self) -> dict[str, Any]:
        r = self.db.execute("SELECT count(*) FILTER (WHERE NOT deleted), count(*) FILTER (WHERE deleted),"
                            " max(changed) FROM files WHERE node = ?", (self.node,)).fetchone()
        return {"watched": r[0], "deleted": r[1], "last_change": r[2]}

    def containers(self) -> list[dict[str, Any]]:
        """Containers the node's engine reports now (removed ones are history only)."""
        return self._all("SELECT * FROM containers WHERE node = ? AND state != 'removed' ORDER BY name")

    def facts(self) -> dict[str, dict[str, Any]]:
        """What ``facts`` collectors report now: {source: {key: value}}."""
        out: dict[str, dict[str, Any]] = {}
        for source, key, value in self.db.execute(
                "SELECT source, key, value FROM twin_facts WHERE node = ? AND key != ''"
                " ORDER BY source, key", (self.node,)):
            out.setdefault(source, {})[key] = json.loads(value)
        return out

    def changes(self, since: float = 0.0, kinds: tuple[str, ...] = CHANGE_KINDS,
                limit: int = 10_000, newest_first: bool = False) -> list[dict[str, Any]]:
        return changes(self.db, self.node, since, kinds, limit, newest_first)

    def state(self, limit: int | None = None) -> dict[str, Any]:
        """Everything the hub knows about the node now (``twin NODE``). ``limit`` bounds the
        long lists for display; None returns them whole."""
        lim = -1 if limit is None else limit
        return {
            "node": self.node,
            "inventory": self.inventory(),
            "interfaces": self.interfaces(),
            "mounts": [{k: m[k] for k in ("mountpoint", "device", "fstype", "options", "total_bytes")}
                       for m in self.mounts()],
            "disks": self.disks(),
            "packages": {
                **self.package_counts(),
                # what actually changed (not every package's first sighting in an inventory)
                "recent": self.package_changes(10 if limit else lim),
                "list": [] if limit else sorted(self.packages(removed=True),
                                                key=lambda p: (p["name"], p["arch"] or "")),
            },
            "pending_counts": self.pending_counts(),
            "pending_updates": self.pending_updates(lim),
            "services": self.services(limit=lim),
            "devices": self.devices(lim),
            "processes": self.processes(),
            "files": self.file_counts(),
            "facts": self.facts(),
        }
