"""Small asyncio helpers."""

from __future__ import annotations

import asyncio


async def wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait for an event up to `timeout` seconds; True if it was set.

    asyncio.wait_for(event.wait(), t) can swallow a cancellation on Python 3.11 when the
    timeout and the cancel race, leaving a task that ignores shutdown; asyncio.timeout()
    does not."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False
