"""Helpers for the security suite (issue 14): a signed-job node like tests/agent/test_jobs.py's,
and the root conftest's helpers under a name no other conftest.py can shadow."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import wire
from agent.jobs import JobRunner
from agent.settings import Settings
from agent.state import State

ROOT = Path(__file__).resolve().parents[2]


def _root_conftest():
    name = "homelab_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "conftest.py")
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


root = _root_conftest()


class Node:
    """A job runner with a real pinned Ed25519 key and the shipped playbooks copied in."""

    def __init__(self, tmp_path: Path, **overrides):
        self.tmp = tmp_path
        self.books = tmp_path / "playbooks"
        self.books.mkdir(parents=True, exist_ok=True)
        self.state_dir = tmp_path / "state"
        self.state_dir.mkdir(exist_ok=True)
        self.key = Ed25519PrivateKey.generate()
        pub = self.key.public_key().public_bytes_raw()
        (self.state_dir / "hub.pub").write_text(base64.b64encode(pub).decode() + "\n")
        values = {"state_dir": self.state_dir, "node": "n1", "hub_url": "http://127.0.0.1:9",
                  "exec": True, "allow_playbooks": [], "max_risk": "change", "playbooks_dir": self.books}
        values.update(overrides)
        self.settings = Settings(values, {k: "test" for k in values})
        self.state = State(self.state_dir / "state.db")
        self.reports: list[wire.JobResult] = []
        self.runner = JobRunner(self.settings, self.state, self.reports.append, "cred")

    def install_shipped(self, name: str) -> Path:
        dst = self.books / f"{name}.sh"
        shutil.copyfile(ROOT / "playbooks" / f"{name}.sh", dst)
        return dst

    def job(self, name: str, params: dict, mode: str = "run") -> dict:
        path = self.books / f"{name}.sh"
        now = time.time()
        job = {"v": 1, "id": "job_" + os.urandom(6).hex(), "node": "n1", "proposal": 1, "mode": mode,
               "playbook": name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "risk": "read-only",
               "params": params, "issued": now, "expires": now + 600}
        payload = json.dumps(job, sort_keys=True, separators=(",", ":"))
        return {"payload": payload, "signature": base64.b64encode(self.key.sign(payload.encode())).decode()}


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, **settings):
    """A real hub on a loopback port with these settings (the root `hub` fixture takes none)."""
    from aiohttp import web

    from hub.app import create_app
    from hub.config import load_settings

    data_dir = tmp_path / "hub"
    app = create_app(load_settings(data_dir=data_dir, listen="127.0.0.1:0", **settings))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield root.InProcessHub(data_dir, app, runner, port)
    finally:
        await runner.cleanup()
