"""What an alert looks like to a generic JSON webhook and to Alertmanager's API v2.

Delivery is hub.notify's: a durable outbox written with the alert, sent with retry and backoff.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def webhook_payload(rec: dict) -> dict:
    return {
        "version": 1,
        "id": rec["id"], "rule": rec["rule"], "state": rec["state"], "transition": rec["transition"],
        "severity": rec["severity"], "node": rec["node"], "value": rec["value"], "count": rec["count"],
        "labels": rec.get("labels", {}), "annotations": rec.get("annotations", {}),
        "fields": rec.get("fields", {}), "propose": rec.get("propose", []),
        "first_seen": iso(rec["first_seen"]), "last_seen": iso(rec["last_seen"]),
        "firing_at": iso(rec["firing_at"]), "resolved_at": iso(rec["resolved_at"]),
    }


def alertmanager_payload(rec: dict, generator_url: str) -> dict:
    out: dict[str, Any] = {
        "labels": {k: str(v) for k, v in rec.get("labels", {}).items()},
        "annotations": {k: str(v) for k, v in rec.get("annotations", {}).items()},
        "startsAt": iso(rec["firing_at"] or rec["first_seen"]),
        "generatorURL": f"{generator_url.rstrip('/')}/alerts/{rec['id']}",
    }
    if rec["state"] == "resolved" and rec["resolved_at"] is not None:
        out["endsAt"] = iso(rec["resolved_at"])
    return out
