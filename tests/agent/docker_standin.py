"""A stand-in Docker Engine on a unix socket, speaking the documented API's JSON
(https://docs.docker.com/reference/api/engine/): /version, /containers/json,
/containers/{id}/json and /containers/{id}/stats. Tests change ``containers`` as they go."""

from __future__ import annotations

import copy

from aiohttp import web


def container(cid: str, name: str, image: str, status: str = "running", health: str | None = None,
              restarts: int = 0, exit_code: int = 0) -> dict:
    state = {"Status": status, "Running": status == "running", "Paused": status == "paused",
             "Restarting": status == "restarting", "OOMKilled": False, "Dead": status == "dead",
             "Pid": 4242 if status == "running" else 0, "ExitCode": exit_code, "Error": "",
             "StartedAt": "2026-12-07T10:00:00.000000000Z", "FinishedAt": "0001-01-01T00:00:00Z"}
    if health:
        state["Health"] = {"Status": health, "FailingStreak": 3 if health == "unhealthy" else 0, "Log": []}
    return {"Id": cid * 8, "Created": "2026-12-07T09:59:59.0Z", "Path": "/init", "Args": [],
            "State": state, "Image": "sha256:" + "ab" * 32, "Name": "/" + name,
            "RestartCount": restarts, "Driver": "overlay2", "Config": {"Image": image, "Labels": {}},
            "HostConfig": {"RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}}}


class DockerStandin:
    def __init__(self, socket_path, engine: str = "Docker Engine - Community"):
        self.path = str(socket_path)
        self.engine = engine
        self.containers: dict[str, dict] = {}
        self.cpu_total: dict[str, int] = {}
        self.system = 10**12
        self.requests: list[str] = []
        self.runner: web.AppRunner | None = None

    def add(self, c: dict) -> None:
        self.containers[c["Id"]] = c

    def _find(self, ref: str) -> dict:
        for cid, c in self.containers.items():
            if cid.startswith(ref) or c["Name"] == "/" + ref:
                return c
        raise web.HTTPNotFound(text='{"message":"No such container: ' + ref + '"}',
                               content_type="application/json")

    async def _version(self, _r):
        return web.json_response({"Version": "27.3.1", "ApiVersion": "1.47", "MinAPIVersion": "1.24",
                                  "Os": "linux", "Arch": "amd64",
                                  "Components": [{"Name": self.engine, "Version": "27.3.1"}]})

    async def _list(self, r):
        self.requests.append(str(r.rel_url))
        out = []
        for c in self.containers.values():
            if r.query.get("all") not in ("1", "true") and not c["State"]["Running"]:
                continue
            out.append({"Id": c["Id"], "Names": [c["Name"]], "Image": c["Config"]["Image"],
                        "ImageID": c["Image"], "Command": "/init", "Created": 1796637599,
                        "State": c["State"]["Status"], "Status": "Up 2 hours", "Labels": {}})
        return web.json_response(out)

    async def _inspect(self, r):
        self.requests.append(str(r.rel_url))
        return web.json_response(copy.deepcopy(self._find(r.match_info["id"])))

    async def _stats(self, r):
        c = self._find(r.match_info["id"])
        # each call: the container used a quarter of one of two CPUs' time since the last
        self.system += 2 * 10**9
        total = self.cpu_total[c["Id"]] = self.cpu_total.get(c["Id"], 5 * 10**9) + 5 * 10**8
        return web.json_response({
            "read": "2026-12-07T12:00:00Z", "name": c["Name"], "id": c["Id"],
            "cpu_stats": {"cpu_usage": {"total_usage": total, "usage_in_kernelmode": 0, "usage_in_usermode": total},
                          "system_cpu_usage": self.system, "online_cpus": 2, "throttling_data": {}},
            "precpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
            "memory_stats": {"usage": 150 * 2**20, "limit": 2 * 2**30, "stats": {"inactive_file": 50 * 2**20}},
        })

    async def start(self) -> DockerStandin:
        app = web.Application()
        app.router.add_get("/version", self._version)
        app.router.add_get("/containers/json", self._list)
        app.router.add_get("/containers/{id}/json", self._inspect)
        app.router.add_get("/containers/{id}/stats", self._stats)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.UnixSite(self.runner, self.path).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
