"""What `homelab-hub status` reports: is the hub up, is it keeping up, is it healthy."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

from hub.config import db_path

URL_FILE = "hub.url"  # the serving hub's own address, written while it runs
SIZE_EVERY = 3600.0
SIZE_KEEP = 400 * 86400.0


def db_bytes(data_dir: Path) -> int:
    base = db_path(data_dir)
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.stat(f"{base}{suffix}").st_size
        except FileNotFoundError:
            pass
    return total


def record_size(db: sqlite3.Connection, data_dir: Path, now: float) -> None:
    """Runs in the writer, hourly: one row of the size history, and its retention."""
    db.execute("INSERT OR REPLACE INTO db_sizes (ts, bytes) VALUES (?, ?)", (now, db_bytes(data_dir)))
    db.execute("DELETE FROM db_sizes WHERE ts < ?", (now - SIZE_KEEP,))


def growth(db: sqlite3.Connection, now_bytes: int, now: float, days: float) -> float | None:
    """Bytes per day over the last `days` (None without a sample that old)."""
    row = db.execute("SELECT ts, bytes FROM db_sizes WHERE ts <= ? ORDER BY ts DESC LIMIT 1",
                     (now - days * 86400 * 0.9,)).fetchone()
    if row is None:
        row = db.execute("SELECT ts, bytes FROM db_sizes ORDER BY ts LIMIT 1").fetchone()
        if row is None or now - row[0] < 3600:
            return None
    return (now_bytes - row[1]) / ((now - row[0]) / 86400)


def hub_pid(data_dir: Path) -> str | None:
    """'pid N' of the hub serving data_dir, or None."""
    from hub.backup import lock_holder

    return lock_holder(data_dir)


def hub_metrics(url: str, token: str | None, data_dir: Path) -> dict[str, float]:
    """The running hub's own figures (writer queue, brain worker), from its /metrics."""
    req = urllib.request.Request(f"{url}/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    ctx = None
    if url.startswith("https:"):  # the hub's own certificate, pinned as its nodes pin it
        from agent.tls import pinned_context
        from hub.tls import cert_path

        try:
            ctx = pinned_context(cert_path(data_dir).read_text())
        except OSError:
            return {}
    try:
        with urllib.request.urlopen(req, timeout=3, context=ctx) as r:
            text = r.read().decode()
    except (OSError, ValueError):
        return {}
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r"^(homelab_hub_writer_queue_depth|homelab_brain_worker_[a-z]+?)(?:_total)?\s+([0-9.e+]+)$",
        text, re.M)}


def brain(db: sqlite3.Connection, settings, running: bool, figures: dict[str, float]) -> dict:
    """The brain reports nothing of its own yet: its configured model, and its last logged
    decision (brain_decisions) when there is one."""
    from hub.brain import model_path

    path = model_path(getattr(settings, "model", None))
    out: dict[str, Any] = {"model": str(path) if path else None,
           "model_present": bool(path and Path(path).exists()),
           "state": "not running" if not running else (
               ("on (the model worker is starting)" if getattr(settings, "brain_warm", True)
                else "on (the model loads at its first decision)") if path else "off (no model)")}
    if running and path and figures.get("homelab_brain_worker_starts"):
        up = figures.get("homelab_brain_worker_up", 0) > 0
        failures = int(figures.get("homelab_brain_worker_failures", 0))
        out["state"] = (f"worker {'running' if up else 'stopped'}, started "
                        f"{int(figures['homelab_brain_worker_starts'])}x, {failures} failure(s)")
    try:
        row = db.execute("SELECT ts, purpose, outcome, latency_ms FROM brain_decisions"
                         " ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        row = None
    if row:
        out["last_decision"] = {"ts": row[0], "purpose": row[1], "outcome": row[2],
                                "latency_ms": row[3]}
    return out


def last_backup(settings) -> dict | None:
    d = getattr(settings, "backup_dir", None)
    if not d or not Path(d).is_dir():
        return None
    from hub.backup import archives

    have = archives(Path(d))
    if not have:
        return None
    st = have[-1].stat()
    return {"path": str(have[-1]), "ts": st.st_mtime, "bytes": st.st_size}


def status(settings) -> dict:
    from agent import __version__
    from hub.queries import node_list
    from hub.rules import load_paths, rule_paths
    from hub.store import connect

    now = time.time()
    path = db_path(settings.data_dir)
    pid = hub_pid(settings.data_dir)
    url = None
    if pid:
        with contextlib.suppress(OSError):
            url = (Path(settings.data_dir) / URL_FILE).read_text().strip() or None
    figures = hub_metrics(url, settings.metrics_token, settings.data_dir) if url else {}
    nodes = node_list(path, settings.offline_after)
    size = db_bytes(settings.data_dir)
    rules, errors = load_paths(rule_paths(settings))
    out = {
        "version": __version__, "data_dir": str(settings.data_dir), "database": str(path),
        "hub": {"running": pid is not None, "pid": pid, "url": url,
                "writer_queue": (int(figures["homelab_hub_writer_queue_depth"])
                                 if "homelab_hub_writer_queue_depth" in figures else None)},
        "nodes": {"total": len(nodes), "online": sum(n["state"] == "online" for n in nodes),
                  "offline": [n["name"] for n in nodes if n["state"] != "online"]},
        "database_bytes": size, "growth_per_day": {}, "last_backup": last_backup(settings),
        "rules": {"loaded": len(rules), "file_errors": len(errors)}, "brain": None,
    }
    if path.exists():
        db = connect(path, readonly=True)
        try:
            try:
                out["growth_per_day"] = {f"{d}d": growth(db, size, now, d) for d in (1, 7)}
            except sqlite3.OperationalError:  # a database older than the size history
                pass
            out["brain"] = brain(db, settings, pid is not None, figures)
        finally:
            db.close()
    return out
