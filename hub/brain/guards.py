"""Deterministic safety guards, before and after the model (issue 18). They do not depend on
the model being sensible, and they hold when there is no model at all.

1. Never block our own: a playbook named ``block-*`` may not take an address or network that
   covers an enrolled node's address (its join address or any interface address the twin
   knows), the hub's own addresses, loopback, link-local, unspecified, or the tailnet's ranges
   (100.64.0.0/10, fd7a:115c:a1e0::/48). The candidate is refused with the reason, and the
   proposal worker puts that reason on the audit record.
2. Nothing to restart: a unit the twin shows active again since the alert began is not
   restarted (``recovered``).
3. Evidence before reports: when the evidence in front of the model names a culprit (a large
   journal, a full /tmp of old files, a failed unit) and one candidate fixes exactly that, it
   ranks above a read-only report (see ``culprit_first``).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import sqlite3
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

Net = ipaddress.IPv4Network | ipaddress.IPv6Network

ALWAYS: list[tuple[str, str]] = [
    ("127.0.0.0/8", "loopback"), ("::1/128", "loopback"),
    ("169.254.0.0/16", "link-local"), ("fe80::/10", "link-local"),
    ("0.0.0.0/32", "unspecified"), ("::/128", "unspecified"),
    ("100.64.0.0/10", "the tailnet's range"), ("fd7a:115c:a1e0::/48", "the tailnet's range"),
]
BLOCKING_PREFIX = "block-"
ADDRESS_TYPES = ("ipaddr", "cidr")


def _net(text: str) -> Net | None:
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        return None


def hub_addresses() -> list[str]:
    """Every address on this machine's interfaces (the hub's own)."""
    import psutil

    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name in ("AF_INET", "AF_INET6"):
                out.append(a.address.split("%")[0])
    return out


def protected(db: sqlite3.Connection | None, own: Iterable[str] | None = None) -> list[tuple[Net, str]]:
    """(network, why) pairs that no block may touch."""
    out = [(n, why) for n, why in ((_net(a), w) for a, w in ALWAYS) if n is not None]
    for a in hub_addresses() if own is None else own:
        n = _net(a)
        if n is not None:
            out.append((ipaddress.ip_network(n.network_address), "the hub's own address"))
    if db is None:
        return out
    rows: list[tuple[str, str]] = []
    try:
        rows += [(name, addr) for name, addr in db.execute("SELECT name, address FROM nodes WHERE address IS NOT NULL")]
    except sqlite3.Error as e:
        log.warning("guards: cannot read node addresses: %s", e)
    try:
        for node, addrs in db.execute("SELECT node, addresses FROM interfaces WHERE addresses IS NOT NULL"):
            rows += [(node, a) for a in str(addrs).split()]
    except sqlite3.Error:
        pass  # no twin on this hub
    for node, addr in rows:
        n = _net(str(addr).split("%")[0].split("/")[0])  # an interface CIDR names the host's own address
        if n is not None:
            out.append((n, f"enrolled node {node}'s address"))
    return out


def refuse(pb_name: str, pb: Any, params: dict, shield: list[tuple[Net, str]]) -> str | None:
    """Why this fix may not be proposed, or None. Only ``block-*`` playbooks are checked; every
    address-typed parameter of theirs must stay clear of ``shield``."""
    if not pb_name.startswith(BLOCKING_PREFIX):
        return None
    for k, spec in getattr(pb, "params", {}).items():
        if getattr(spec, "type", None) not in ADDRESS_TYPES or params.get(k) in (None, ""):
            continue
        target = _net(str(params[k]))
        if target is None:
            return f"{pb_name}: {k}={str(params[k])[:64]!r} is not an address"
        for net, why in shield:
            if net.version == target.version and target.overlaps(net):
                return f"{pb_name} refused: {k}={target} would block {why} ({net})"
    return None


# Playbooks that restart something, and the parameter naming the unit they restart.
RESTARTS = {"restart-unit": "unit"}


def recovered(db: sqlite3.Connection | None, alert: dict, pb_name: str, params: dict) -> str | None:
    """Why restarting is pointless: the twin shows the unit active again since the alert began."""
    key = RESTARTS.get(pb_name)
    if db is None or key is None or not params.get(key):
        return None
    from hub.brain.context import alert_ts

    try:
        row = db.execute("SELECT active, changed FROM services WHERE node = ? AND unit = ?",
                         (alert.get("node"), params[key])).fetchone()
    except sqlite3.Error:
        return None  # no twin on this hub
    since = alert.get("first_seen") or alert_ts(alert)
    if row and row[0] == "active" and since and row[1] >= float(since):
        return f"{pb_name} not needed: {params[key]} is active again since the alert began"
    return None


def check(db: sqlite3.Connection | None, alert: dict, pb_name: str, pb: Any, params: dict,
          shield: list[tuple[Net, str]] | None = None) -> str | None:
    """Every guard on one fix (refuse, recovered): the first reason it may not be proposed."""
    if shield is None:
        shield = protected(db)
    return refuse(pb_name, pb, params, shield) or recovered(db, alert, pb_name, params)


# A culprit named in the evidence -> the playbooks that fix exactly that.
CULPRITS: list[tuple[re.Pattern, tuple[str, ...]]] = [
    (re.compile(r"/var/log/journal|journal(s|d)?\b[^.]*\b(size|disk.usage|take up|[0-9.]+ ?[GM]i?B?)\b", re.I),
     ("journal-vacuum",)),
    (re.compile(r"(^|[\s'\"=(])/(var/)?tmp\b", re.I), ("clean-tmp",)),
    (re.compile(r"/var/log/[^\s]+\.(log|[0-9])|logrotate|log files? (grew|growing|large)", re.I), ("logrotate-force",)),
    (re.compile(r"/var/cache/apt|apt(-get)? autoremove|no longer required|old kernels?|linux-image-[0-9]", re.I),
     ("apt-autoremove",)),
]
REPORTS = ("read-only",)


def culprit(cands: list[dict], playbooks: dict[str, Any], evidence: str) -> dict | None:
    """The candidate that directly fixes a culprit the evidence names, if the rule offers one."""
    for pat, fixes in CULPRITS:
        if pat.search(evidence):
            for c in cands:
                if c["playbook"] in fixes:
                    return c
    return None


def is_report(pb: Any) -> bool:
    return getattr(pb, "risk", None) in REPORTS


def culprit_first(ranked: list[tuple[dict, float]], playbooks: dict[str, Any], fix: dict | None) -> list[tuple[dict, float]]:
    """``ranked`` with ``fix`` (see culprit) moved ahead of every read-only report; the order
    among the others is kept and nothing is added or removed."""
    if fix is None:
        return ranked
    at = next((i for i, (c, _) in enumerate(ranked) if c is fix), None)
    first_report = next((i for i, (c, _) in enumerate(ranked) if is_report(playbooks[c["playbook"]])), None)
    if at is None or first_report is None or at < first_report:
        return ranked
    rest = ranked[:at] + ranked[at + 1:]
    return rest[:first_report] + [ranked[at]] + rest[first_report:]
