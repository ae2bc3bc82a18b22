"""Containers end to end: a real agent subprocess polls a stand-in Docker Engine API socket;
the hub keeps the containers and their metrics, and the shipped rule proposes the shipped
restart-container playbook for the container that turns unhealthy."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.conftest import Proc, async_wait_for, enroll, join_agent
from tests.hub.rules.rules_fixtures import rules_hub  # noqa: F401 - fixture

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
from docker_standin import DockerStandin, container  # noqa: E402


async def test_unhealthy_container_gets_a_restart_proposed(rules_hub, tmp_path):  # noqa: F811
    engine = DockerStandin(tmp_path / "docker.sock")
    engine.add(container("a1", "web", "nginx:1.27", health="healthy"))
    engine.add(container("b2", "backup", "restic/restic:0.17", status="exited"))
    await engine.start()
    h = await rules_hub()  # the shipped rules only
    state = tmp_path / "agent"
    await asyncio.to_thread(join_agent, h.url, enroll(h.data_dir, "n1"), state)
    agent = Proc([sys.executable, "-m", "agent", "run", "--state-dir", str(state), "--collectors", "containers"],
                 tmp_path / "agent.log", {"HOMELAB_AGENT_CONTAINERS_SOCKET": engine.path,
                                          "HOMELAB_AGENT_CONTAINERS_INTERVAL": "1"})
    try:
        await async_wait_for(lambda: len(h.query("SELECT 1 FROM containers WHERE node = 'n1'")) == 2, 60,
                             what="both containers on the hub")
        await async_wait_for(lambda: h.query(
            "SELECT 1 FROM series WHERE node = 'n1' AND key = 'container_memory_bytes{name=\"web\"}'"),
            60, what="container memory series")
        engine.containers["a1" * 8]["State"]["Health"]["Status"] = "unhealthy"
        await async_wait_for(lambda: h.query(
            "SELECT 1 FROM alerts WHERE rule = 'container-unhealthy' AND state = 'firing'"), 60,
            what="container-unhealthy firing")
        await async_wait_for(lambda: h.query(
            "SELECT 1 FROM proposals WHERE playbook = 'restart-container'"), 60, what="the proposal")
    finally:
        await asyncio.to_thread(agent.terminate)
        await engine.stop()
    assert h.query("SELECT name, image, state, health, engine FROM containers WHERE node = 'n1' ORDER BY name") == [
        ("backup", "restic/restic:0.17", "exited", None, "docker"),
        ("web", "nginx:1.27", "running", "unhealthy", "docker")]
    assert h.query("SELECT state, health, previous FROM container_changes WHERE name = 'web' ORDER BY seq") == [
        ("running", "healthy", None), ("running", "unhealthy", "running/healthy")]
    from hub.docs import pages
    from hub.store import connect

    db = connect(h.data_dir / "homelab.db", readonly=True)
    try:
        section = pages.node_page(db, "n1").split("## Containers")[1].split("## ")[0]
    finally:
        db.close()
    assert "| web | nginx:1.27 | running | unhealthy | 0 | docker |" in section
    assert "| backup | restic/restic:0.17 | exited |  | 0 | docker |" in section
    (params, state_) = h.query("SELECT params, state FROM proposals WHERE playbook = 'restart-container'")[0]
    assert params == '{"container":"web","runtime":"docker"}' and state_ == "proposed"
