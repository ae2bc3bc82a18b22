"""Containers, through the Docker Engine API on its unix socket (Podman serves the same API).

Every ``containers_interval``: ``GET /containers/json?all=1`` for the list, ``/containers/ID/json``
for state, health and restart count, and ``/containers/ID/stats?stream=false&one-shot=true``
for CPU and memory of running ones. A ``container`` event goes out when a container is first
seen, changes state, health, restart count or image, or is gone; CPU (percent of one core,
from two successive polls) and memory go out each poll as metrics ``container_cpu_percent``
and ``container_memory_bytes`` labelled by name, so they roll up like every other series.

Where no engine socket answers (no Docker, no Podman, or no permission on the socket) the
collector steps aside with the reason. Last states are kept in ``state.db``: a restarted agent
does not report every container again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from agent import wire
from agent.collectors import Collector

log = logging.getLogger(__name__)

STATE_KEY = "containers.last"
MAX_CONTAINERS = 2000


def candidate_sockets() -> list[str]:
    runtime = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    return ["/var/run/docker.sock", "/run/podman/podman.sock", f"{runtime}/podman/podman.sock",
            f"{runtime}/docker.sock"]


def find_socket(configured: str | None) -> tuple[str | None, str]:
    """(socket path, why not): the configured one, else the first that accepts a connection."""
    tried = [configured] if configured else candidate_sockets()
    reasons = []
    for path in tried:
        if not os.path.exists(path):
            reasons.append(f"{path}: absent")
            continue
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2)
        try:
            s.connect(path)
            return path, ""
        except OSError as e:
            reasons.append(f"{path}: {e.strerror or e}")
        finally:
            s.close()
    return None, "no Docker or Podman API socket (" + "; ".join(reasons) + ")"


def summary(c: dict) -> str:
    return c["state"] + (f"/{c['health']}" if c.get("health") else "")


def parse_inspect(d: dict[str, Any], engine: str) -> dict:
    st = d.get("State") or {}
    health = (st.get("Health") or {}).get("Status") or None
    state = st.get("Status") or ("running" if st.get("Running") else "exited")
    if st.get("Restarting"):
        state = "restarting"
    return {"name": (d.get("Name") or "").lstrip("/") or d["Id"][:12], "id": d["Id"][:64],
            "image": (d.get("Config") or {}).get("Image") or d.get("Image", ""),
            "state": state, "health": health if health not in ("", "none") else None,
            "restarts": int(d.get("RestartCount") or 0), "exit_code": st.get("ExitCode"),
            "engine": engine}


def cpu_percent(prev: tuple[int, int] | None, stats: dict) -> tuple[float | None, tuple[int, int] | None]:
    """Percent of one CPU between two polls, from cumulative container and system CPU time."""
    cs = stats.get("cpu_stats") or {}
    total = (cs.get("cpu_usage") or {}).get("total_usage")
    system = cs.get("system_cpu_usage")
    if total is None or system is None:
        return None, prev
    cpus = cs.get("online_cpus") or len((cs.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    now = (int(total), int(system))
    if prev is None or now[1] <= prev[1] or now[0] < prev[0]:
        return None, now
    return round((now[0] - prev[0]) / (now[1] - prev[1]) * cpus * 100, 3), now


def memory_bytes(stats: dict) -> int | None:
    ms = stats.get("memory_stats") or {}
    usage = ms.get("usage")
    if usage is None:
        return None
    # as `docker stats` shows it: page cache that can be dropped is not the container's
    inner = ms.get("stats") or {}
    return max(0, int(usage) - int(inner.get("inactive_file", inner.get("total_inactive_file", 0))))


class ContainersCollector(Collector):
    name = "containers"

    @classmethod
    def unavailable(cls, settings) -> str | None:
        return find_socket(getattr(settings, "containers_socket", None))[1] or None

    def __init__(self, settings, emit, state):
        super().__init__(settings, emit, state)
        self.interval = float(settings.containers_interval)
        if not 1 <= self.interval <= 86400:
            raise ValueError(f"containers_interval must be 1..86400 s, got {self.interval}")
        self.path = find_socket(getattr(settings, "containers_socket", None))[0] or ""
        self.cpu: dict[str, tuple[int, int]] = {}

    async def run(self) -> None:
        import aiohttp

        last: dict[str, dict] = self.state.get(STATE_KEY) or {}
        conn = aiohttp.UnixConnector(path=self.path)
        timeout = aiohttp.ClientTimeout(total=min(30.0, self.interval * 2))
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
            engine = await self._engine(s)
            while True:
                started = time.monotonic()
                try:
                    last = await self.poll(s, engine, last)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as e:
                    log.warning("containers: polling %s failed: %s", self.path, e)
                await asyncio.sleep(max(1.0, self.interval - (time.monotonic() - started)))

    async def _engine(self, s) -> str:
        try:
            async with s.get("http://engine/version") as r:
                v = await r.json(content_type=None)
        except Exception:  # noqa: BLE001 - only a label: docker is the fair guess
            return "docker"
        names = " ".join(c.get("Name", "") for c in v.get("Components") or []).lower()
        return "podman" if "podman" in names else "docker"

    async def _get(self, s, path: str) -> Any:
        async with s.get(f"http://engine{path}") as r:
            if r.status != 200:
                raise ValueError(f"GET {path}: HTTP {r.status}: {(await r.text())[:200]}")
            return await r.json(content_type=None)

    async def poll(self, s, engine: str, last: dict[str, dict]) -> dict[str, dict]:
        listed = (await self._get(s, "/containers/json?all=1"))[:MAX_CONTAINERS]
        now = time.time()
        seen: dict[str, dict] = {}
        samples: dict[str, float] = {}
        for item in listed:
            try:
                c = parse_inspect(await self._get(s, f"/containers/{item['Id']}/json"), engine)
            except ValueError as e:  # removed between list and inspect
                log.debug("containers: %s", e)
                continue
            seen[c["name"]] = c
            if c["state"] == "running":
                try:
                    stats = await self._get(s, f"/containers/{item['Id']}/stats?stream=false&one-shot=true")
                except ValueError as e:  # an engine without cgroup stats: state still counts
                    log.debug("containers: %s", e)
                    stats = {}
                pct, ticks = cpu_percent(self.cpu.get(c["id"]), stats)
                if ticks is not None:
                    self.cpu[c["id"]] = ticks
                label = '{name="' + c["name"].replace("\\", "\\\\").replace('"', '\\"') + '"}'
                if pct is not None:
                    samples[f"container_cpu_percent{label}"] = pct
                mem = memory_bytes(stats)
                if mem is not None:
                    samples[f"container_memory_bytes{label}"] = float(mem)
            before = last.get(c["name"])
            keys = ("id", "image", "state", "health", "restarts")
            if before is None or any(before.get(k) != c[k] for k in keys):
                self.emit(wire.Container(ts=now, **c, previous=summary(before) if before else None))
        for name, before in last.items():
            if name not in seen:
                self.emit(wire.Container(ts=now, name=name, id=before["id"], image=before["image"],
                                         state="removed", engine=engine, previous=summary(before)))
        if samples:
            self.emit(wire.Metrics(ts=now, samples=samples))
        if seen != last:
            self.state.set(STATE_KEY, seen)
        self.cpu = {k: v for k, v in self.cpu.items() if k in {c["id"] for c in seen.values()}}
        return seen
