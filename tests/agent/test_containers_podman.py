"""The containers collector against a real Podman engine (its Docker-compatible API socket):
a container built here from busybox-static, its healthcheck driven by hand (`podman healthcheck
run`: no systemd timers here), stopped and removed. Needs root, podman, runc and busybox-static
(tests/run installs them); skipped where they are missing."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from agent import wire
from agent.collectors.containers import ContainersCollector
from agent.config import load_settings
from agent.state import State
from tests.conftest import Proc, async_wait_for, wait_for

BUSYBOX = Path("/bin/busybox")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("podman") and shutil.which("runc") and BUSYBOX.exists()),
    reason="needs root, podman, runc and busybox-static")


class Podman:
    """A private Podman: storage, run and tmp directories under tmp_path (vfs, cgroupfs, runc:
    what works inside a container), and its API service on a socket of its own."""

    def __init__(self):
        # podman refuses a run root longer than 50 characters: pytest's tmp_path is too long
        tmp = self.tmp = Path(tempfile.mkdtemp(prefix="peers-pod-", dir="/tmp"))
        self.sock = tmp / "api.sock"
        self.base = ["podman", "--root", str(tmp / "graph"), "--runroot", str(tmp / "run"),
                     "--tmpdir", str(tmp / "libpod"), "--storage-driver", "vfs",
                     "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc"]
        self.service: Proc | None = None

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=120)
        if check:
            assert r.returncode == 0, f"podman {' '.join(args)}: {r.stderr}"
        return r

    def start(self) -> Podman:
        root = self.tmp / "image"
        (root / "bin").mkdir(parents=True)
        (root / "tmp").mkdir()
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        (root / "bin" / "sh").symlink_to("busybox")  # a --health-cmd string runs under /bin/sh -c
        with tarfile.open(self.tmp / "bb.tar", "w") as t:
            t.add(root, arcname=".")
        self("import", str(self.tmp / "bb.tar"), "localhost/peers-busybox:1")
        self.service = Proc([*self.base, "system", "service", "--time=0", f"unix://{self.sock}"],
                            self.tmp / "service.log")
        wait_for(lambda: self.sock.exists(), 30, what="the podman API socket")
        return self

    def stop(self) -> None:
        self("rm", "--all", "--force", "--time", "0", check=False)
        if self.service is not None:
            self.service.terminate()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def podman():
    p = Podman().start()
    yield p
    p.stop()


def changes(got: list) -> list[wire.Container]:
    return [e for e in got if isinstance(e, wire.Container) and e.name == "peersweb"]


async def test_real_podman_container_state_health_and_removal(tmp_path, podman):
    podman("run", "-d", "--name", "peersweb", "--network", "none", "--ulimit", "nofile=1024:1024",
           "--ulimit", "nproc=1024:1024", "--health-cmd", "/bin/busybox cat /tmp/ok", "--health-retries", "1",
           "--health-interval", "1h", "localhost/peers-busybox:1", "/bin/busybox", "sleep", "1000")
    (tmp_path / "agent").mkdir()
    state = State(tmp_path / "agent" / "state.db")
    settings = load_settings(state_dir=tmp_path / "agent", containers_socket=str(podman.sock),
                             containers_interval="1")
    assert ContainersCollector.unavailable(settings) is None
    got: list = []
    task = asyncio.create_task(ContainersCollector(settings, lambda e: got.append(e) or True, state).run())

    async def health(expect: str) -> wire.Container:
        await async_wait_for(lambda: changes(got) and changes(got)[-1].health == expect, 60,
                             what=f"health {expect}")
        return changes(got)[-1]

    try:
        first = await health("starting")
        assert (first.engine, first.state, first.image, first.restarts) == (
            "podman", "running", "localhost/peers-busybox:1", 0)
        podman("exec", "peersweb", "/bin/busybox", "touch", "/tmp/ok")
        await asyncio.to_thread(podman, "healthcheck", "run", "peersweb")
        assert (await health("healthy")).previous == "running/starting"
        podman("exec", "peersweb", "/bin/busybox", "rm", "/tmp/ok")
        await asyncio.to_thread(podman, "healthcheck", "run", "peersweb", check=False)  # exits 1
        assert (await health("unhealthy")).previous == "running/healthy"
        await asyncio.to_thread(podman, "stop", "--time", "0", "peersweb")
        await async_wait_for(lambda: changes(got)[-1].state == "exited", 60, what="exited")
        await asyncio.to_thread(podman, "rm", "peersweb")
        await async_wait_for(lambda: changes(got)[-1].state == "removed", 60, what="removed")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        state.close()
    assert [e.state for e in changes(got)][-2:] == ["exited", "removed"]
