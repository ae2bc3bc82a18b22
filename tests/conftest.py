"""Shared fixtures: real hubs (in-process on loopback, or as subprocesses), real agents as
subprocesses, every state directory under tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from hub import auth
from hub.app import create_app
from hub.config import load_settings
from hub.keys import WRITER
from hub.store import open_db

# Hub subprocesses started by tests inherit this: a warm model worker in each would load the
# default model and evaluate its prompt for nothing, dozens of times on a 2-core CI machine.
# The warm-start tests turn it on for themselves.
os.environ.setdefault("HOMELAB_BRAIN_WARM", "0")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
LOGHUB = SHARED / "data" / "loghub"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], object], timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll cond() until truthy; fail with `what` after timeout. Returns cond()'s value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def async_wait_for(cond, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def enroll(data_dir: Path, name: str, ttl: float = 3600) -> str:
    db = open_db(Path(data_dir) / "homelab.db")
    db.execute("BEGIN IMMEDIATE")
    token = auth.enroll(db, name, ttl)
    db.execute("COMMIT")
    db.close()
    return token


def query(data_dir: Path, sql: str, args: tuple = ()) -> list[tuple]:
    db = sqlite3.connect(f"file:{Path(data_dir) / 'homelab.db'}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


class InProcessHub:
    def __init__(self, data_dir: Path, app: web.Application, runner: web.AppRunner, port: int):
        self.data_dir, self.app, self.runner, self.port = data_dir, app, runner, port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def writer(self):
        return self.app[WRITER]

    def enroll(self, name: str, ttl: float = 3600) -> str:
        return enroll(self.data_dir, name, ttl)

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        return query(self.data_dir, sql, args)


@pytest.fixture
async def hub(tmp_path, monkeypatch):
    """A real hub app on a loopback port, in this process (fast)."""
    for k in list(os.environ):
        if k.startswith("HOMELAB_"):
            monkeypatch.delenv(k)
    # a model worker per test hub would load the default model for nothing; tests of the
    # warm start turn it back on
    monkeypatch.setenv("HOMELAB_BRAIN_WARM", "0")
    data_dir = tmp_path / "hub"
    settings = load_settings(data_dir=data_dir, listen="127.0.0.1:0")
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    h = InProcessHub(data_dir, app, runner, port)
    yield h
    await runner.cleanup()


class Proc:
    """A child process with its output in a file; stopped (then killed) at teardown."""

    def __init__(self, argv: list[str], log: Path, env: dict | None = None):
        self.argv, self.log = argv, log
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                      start_new_session=True)

    def alive(self) -> bool:
        return self.p.poll() is None

    def terminate(self, timeout: float = 20) -> int | None:
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.p.wait(timeout)
        if self.alive():
            self.kill()
        return self.p.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class HubProcess:
    def __init__(self, data_dir: Path, port: int, log: Path):
        self.data_dir, self.port, self.log = data_dir, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: Proc | None = None

    def start(self) -> HubProcess:
        self.proc = Proc([sys.executable, "-m", "hub", "serve", "--data-dir", str(self.data_dir),
                          "--listen", f"127.0.0.1:{self.port}"], self.log)
        wait_for(self._ready, 30, what=f"hub on port {self.port}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise AssertionError(f"hub exited: {self.proc.output()[-2000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    def enroll(self, name: str) -> str:
        return enroll(self.data_dir, name)

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        return query(self.data_dir, sql, args)


@pytest.fixture
def hub_process(tmp_path):
    """Factory for hub subprocesses (for kill -9 and restart tests)."""
    made: list[HubProcess] = []

    def make(data_dir: Path | None = None, port: int | None = None) -> HubProcess:
        h = HubProcess(data_dir or tmp_path / "hub", port or free_port(), tmp_path / f"hub-{len(made)}.log")
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


def join_agent(hub_url: str, token: str, state_dir: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "agent", "join", hub_url, token, "--state-dir", str(state_dir)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def agent_process(tmp_path):
    """Factory: agent_process(state_dir, *args, env=...) starts `homelab-agent run`."""
    made: list[Proc] = []

    def make(state_dir: Path, *args: str, env: dict | None = None) -> Proc:
        p = Proc([sys.executable, "-m", "agent", "run", "--state-dir", str(state_dir), *args],
                 tmp_path / f"agent-{len(made)}.log", env)
        made.append(p)
        return p

    yield make
    for p in made:
        p.terminate()
