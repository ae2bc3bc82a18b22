"""Finding 6: a flood of refused requests is counted in memory and written as a few rate-limited
summaries, not a row per request; nothing of the count is lost."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from seclib import root

from hub import rejects
from hub.keys import STATS


async def test_a_flood_of_bad_tokens_writes_a_few_summary_rows(hub):
    n = 3000
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer hln_not-a-credential"}) as s:
        async def one():
            async with s.get(f"{hub.url}/v1/hello") as r:
                assert r.status == 401
        for start in range(0, n, 100):
            await asyncio.gather(*(one() for _ in range(min(100, n - start))))
    # the first one is on the record at once
    await root.async_wait_for(lambda: hub.query("SELECT count(*) FROM ingest_errors")[0][0] >= 1, 30,
                              what="the first refusal's row")
    # the rest arrive as a summary when the window ends, and add up to every refusal
    def total():
        rows = hub.query("SELECT reason FROM ingest_errors WHERE status = 401")
        return sum(int(r.split(" ", 1)[0]) if r[0].isdigit() else 1 for (r,) in rows)

    await root.async_wait_for(lambda: total() == n, 30, what=f"{n} refusals summarised")
    rows = hub.query("SELECT count(*) FROM ingest_errors")[0][0]
    assert rows <= 2 + int(30 / rejects.WINDOW), rows
    assert hub.app[STATS]["rejected_401"] == n


def test_summaries_are_bounded_per_window():
    r = rejects.Rejects()
    now = time.time()
    immediate = [row for i in range(10_000) for row in r.add(401, f"reason {i}", f"10.0.0.{i % 250}", now)]
    assert len(immediate) == rejects.BURST
    summary = r.flush(now + rejects.WINDOW)
    assert len(summary) <= rejects.GROUPS + 1  # the rest folded into "(other reasons)"
    counted = sum(int(reason.split(" ", 1)[0]) for _, _, _, reason in summary)
    assert counted + len(immediate) == 10_000
    assert r.flush() == []
