"""``homelab-hub digest``: the daily maintenance pass. Finds opportunities, proposes
maintenance playbooks, never runs them.

Each finding names a node, what was seen (with the numbers), and a playbook with parameters
that pass its header. With ``--propose`` the findings are queued as proposal requests (rule
``digest``): the proposals worker validates them again and a person approves each one, as
for any alert. Checks are deterministic SQL over the twin tables and metric history; a node
without the data for a check is simply not reported by it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from hub.twin import mount_usage

log = logging.getLogger(__name__)

GIB = 1 << 30
JOURNAL_BYTES = 1 * GIB
LOG_FILE_BYTES = 1 * GIB
TMP_BYTES = 2 * GIB
TMP_MOUNT_RATIO = 0.80
KEEP_KERNELS = 2
UPDATES_MANY = 20
FULL_WITHIN_DAYS = 14.0
TREND_WINDOW = 7 * 86400


def _rows(db: sqlite3.Connection, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError as e:
        log.debug("digest check skipped: %s", e)
        return []


def pending_updates(db) -> list[dict]:
    out = []
    for r in _rows(db, "SELECT node, count(*) AS n, sum(security) AS sec FROM pending_updates GROUP BY node"):
        if r["sec"] or r["n"] >= UPDATES_MANY:
            out.append({"node": r["node"], "check": "pending_updates",
                        "finding": f"{r['n']} pending updates, {r['sec'] or 0} of them security",
                        "playbook": "apt-upgrade", "params": {"kind": "upgrade"}})
    return out


def journal_growth(db) -> list[dict]:
    out = []
    for r in _rows(db, "SELECT node, sum(size) AS bytes, count(*) AS n FROM files WHERE deleted = 0"
                       " AND path LIKE '/var/log/journal/%' GROUP BY node"):
        if (r["bytes"] or 0) >= JOURNAL_BYTES:
            out.append({"node": r["node"], "check": "journal_growth",
                        "finding": f"journal files hold {r['bytes'] / GIB:.1f} GiB in {r['n']} files",
                        "playbook": "journal-vacuum", "params": {"size": "500M"}})
    for r in _rows(db, "SELECT node, path, size FROM files WHERE deleted = 0 AND path LIKE '/var/log/%'"
                       " AND path NOT LIKE '/var/log/journal/%' AND size >= ? ORDER BY size DESC", (LOG_FILE_BYTES,)):
        out.append({"node": r["node"], "check": "log_growth",
                    "finding": f"{r['path']} is {r['size'] / GIB:.1f} GiB",
                    "playbook": "logrotate-force", "params": {}})
    return out


def temp_growth(db) -> list[dict]:
    out = []
    seen = set()
    for r in _rows(db, "SELECT node, CASE WHEN path LIKE '/var/tmp/%' THEN '/var/tmp' ELSE '/tmp' END AS dir,"
                       " sum(size) AS bytes FROM files WHERE deleted = 0 AND (path LIKE '/tmp/%' OR path LIKE '/var/tmp/%')"
                       " GROUP BY node, dir"):
        if (r["bytes"] or 0) >= TMP_BYTES:
            seen.add((r["node"], r["dir"]))
            out.append({"node": r["node"], "check": "temp_growth",
                        "finding": f"{r['dir']} holds {r['bytes'] / GIB:.1f} GiB of watched files",
                        "playbook": "clean-tmp", "params": {"path": r["dir"]}})
    for m in mount_usage(db):
        ratio, key = m["used_ratio"], (m["node"], m["mountpoint"])
        if m["mountpoint"] in ("/tmp", "/var/tmp") and ratio is not None and ratio >= TMP_MOUNT_RATIO \
                and key not in seen:
            out.append({"node": m["node"], "check": "temp_growth",
                        "finding": f"{m['mountpoint']} is {100 * ratio:.0f}% full",
                        "playbook": "clean-tmp", "params": {"path": m["mountpoint"]}})
    return out


def old_kernels(db) -> list[dict]:
    out = []
    for r in _rows(db, "SELECT node, count(*) AS n, group_concat(name, ' ') AS names FROM packages"
                       " WHERE state = 'installed' AND name GLOB 'linux-image-[0-9]*' GROUP BY node"):
        if r["n"] > KEEP_KERNELS:
            out.append({"node": r["node"], "check": "old_kernels",
                        "finding": f"{r['n']} kernels installed ({r['names'][:200]})",
                        "playbook": "apt-autoremove", "params": {}})
    return out


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (value per second)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    den = sum((p[0] - mx) ** 2 for p in points)
    return 0.0 if den == 0 else sum((p[0] - mx) * (p[1] - my) for p in points) / den


def disks_trending_full(db, now: float) -> list[dict]:
    out = []
    series = _rows(db, "SELECT id, node, labels FROM series WHERE name = 'disk_used_ratio'")
    for s in series:
        pts = [(r["ts"], r["avg"]) for r in _rows(db,
               "SELECT ts, avg FROM samples_1h WHERE series = ? AND ts >= ? ORDER BY ts", (s["id"], now - TREND_WINDOW))]
        if len(pts) < 6:
            continue
        rate = slope(pts)
        last = pts[-1][1]
        if rate <= 0:
            continue
        days = (1.0 - last) / rate / 86400
        if days <= FULL_WITHIN_DAYS:
            mount = s["labels"][7:-1] if s["labels"].startswith('mount="') else "/"
            out.append({"node": s["node"], "check": "disk_trend",
                        "finding": f"{mount} is {100 * last:.0f}% used and growing {100 * rate * 86400:.2f} points/day:"
                                   f" full in about {days:.0f} days",
                        "playbook": "disk-report", "params": {"path": mount}})
    return out


CHECKS = (pending_updates, journal_growth, temp_growth, old_kernels)


def digest(db_path: Path | str, playbooks: dict[str, Any], now: float | None = None) -> list[dict]:
    """Findings, each with a validated playbook proposal (or the reason it cannot be proposed)."""
    from agent import playbook as pbm
    from hub.store import connect

    now = time.time() if now is None else now
    if not Path(db_path).exists():
        return []
    db = connect(db_path, readonly=True)
    try:
        found = [f for check in CHECKS for f in check(db)] + disks_trending_full(db, now)
    finally:
        db.close()
    for f in found:
        pb = playbooks.get(f["playbook"])
        if pb is None:
            f["problem"] = f"playbook {f['playbook']} is not installed"
            continue
        try:
            f["params"] = pbm.validate_params(pb, f["params"])
            f["risk"] = pb.risk
        except ValueError as e:
            f["problem"] = str(e)
    return sorted(found, key=lambda f: (f["node"], f["check"]))


def propose(db: sqlite3.Connection, findings: list[dict]) -> list[int]:
    """Queue valid findings as proposal requests (inside the caller's write transaction)."""
    from hub.proposals import record_request

    ids = []
    for f in findings:
        if f.get("problem"):
            continue
        alert = {"id": None, "rule": "digest", "node": f["node"], "transition": "firing",
                 "summary": f"maintenance: {f['finding']}", "annotations": json.dumps({"summary": f["finding"]}),
                 "propose": [{"playbook": f["playbook"], "params": f["params"]}]}
        rid = record_request(db, alert)
        if rid is not None:
            ids.append(rid)
    return ids
