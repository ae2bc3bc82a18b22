"""Running a command from a collector: bounded in time, its whole process group killed on
timeout or cancellation, output decoded, a clear error on failure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


async def run(*argv: str, timeout: float, ok: tuple[int, ...] = (0,), env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C", **(env or {})},
        start_new_session=True,  # its own process group: a kill reaches its children too
    )
    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that lands
    # as the child finishes, and the agent's shutdown would then wait on this collector forever.
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        raise RuntimeError(f"{' '.join(argv[:2])} timed out after {timeout:.0f}s") from None
    finally:
        if proc.returncode is None:  # timed out or cancelled: no orphans
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    if proc.returncode not in ok:
        raise RuntimeError(f"{' '.join(argv[:3])} exited {proc.returncode}: {err.decode(errors='replace').strip()[:300]}")
    return out.decode(errors="replace")
