"""Alert notifications: a generic JSON webhook and Alertmanager's API v2.

Runs as one asyncio task in the hub's loop. The rules thread hands records over with
``submit_threadsafe``; a bounded queue sheds the oldest notification (counted) rather
than grow, and every delivery is retried with exponential backoff, so a dead receiver
never slows ingest or evaluation. Alertmanager forgets alerts that are not re-sent, so
firing alerts are pushed again every ``resend`` seconds until they resolve.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import deque
from typing import Any

import aiohttp

from agent import aio

log = logging.getLogger(__name__)


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


class Notifier:
    def __init__(self, webhooks: list[str], alertmanager_url: str | None, generator_url: str,
                 max_queue: int = 10_000, retries: int = 5, backoff: float = 0.5,
                 resend: float = 60.0, timeout: float = 10.0):
        self.webhooks, self.am = list(webhooks), alertmanager_url
        self.generator_url = generator_url
        self.queue: deque = deque(maxlen=max_queue)
        self.retries, self.backoff, self.resend, self.timeout = retries, backoff, resend, timeout
        self.firing: dict[int, dict] = {}
        self.stats = {"sent": 0, "failed": 0, "shed": 0}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.webhooks or self.am)

    def submit(self, records: list[dict]) -> None:
        for rec in records:
            if rec["transition"] in ("firing", "resolved") and rec.get("notify", True):
                if rec["transition"] == "resolved" and rec["firing_at"] is None:
                    continue  # a pending alert that never fired: nobody was told, nobody to untell
                if len(self.queue) == self.queue.maxlen:
                    self.stats["shed"] += 1
                self.queue.append(rec)
                if rec["transition"] == "firing":
                    self.firing[rec["id"]] = rec
                else:
                    self.firing.pop(rec["id"], None)
        self._wake.set()

    def submit_threadsafe(self, records: list[dict]) -> None:
        if self._loop is not None and self.enabled:
            self._loop.call_soon_threadsafe(self.submit, records)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as s:
            last_resend = self._loop.time()
            while True:
                await aio.wait(self._wake, min(self.resend, 5.0))
                self._wake.clear()
                batch = list(self.queue)
                self.queue.clear()
                if self.am and self._loop.time() - last_resend >= self.resend:
                    last_resend = self._loop.time()
                    ids = {r["id"] for r in batch}
                    batch += [r for i, r in self.firing.items() if i not in ids]
                if batch:
                    await self.deliver(s, batch)

    async def deliver(self, s: aiohttp.ClientSession, batch: list[dict]) -> None:
        jobs = [self._post(s, url, [webhook_payload(r) for r in batch]) for url in self.webhooks]
        if self.am:
            jobs.append(self._post(s, f"{self.am.rstrip('/')}/api/v2/alerts",
                                   [alertmanager_payload(r, self.generator_url) for r in batch]))
        await asyncio.gather(*jobs)

    async def _post(self, s: aiohttp.ClientSession, url: str, body: Any) -> bool:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                async with s.post(url, json=body) as r:
                    if r.status < 300:
                        self.stats["sent"] += 1
                        return True
                    text = (await r.text())[:200]
                    if 400 <= r.status < 500 and r.status != 429:
                        log.warning("notify %s refused (%d): %s", url, r.status, text)
                        break  # the receiver will not change its mind
                    log.info("notify %s: %d, retrying", url, r.status)
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                log.info("notify %s attempt %d failed: %s", url, attempt + 1, e)
            if attempt < self.retries:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
        self.stats["failed"] += 1
        return False
