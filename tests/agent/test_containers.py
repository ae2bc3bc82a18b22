"""The containers collector against a stand-in Docker Engine API on a unix socket: state,
health, restarts, image, CPU and memory; changes only; restart-safe; steps aside with no engine."""

from __future__ import annotations

import asyncio

import pytest
from docker_standin import DockerStandin, container

from agent import wire
from agent.collectors.containers import ContainersCollector, cpu_percent, find_socket
from agent.config import load_settings
from agent.state import State
from tests.conftest import async_wait_for


@pytest.fixture
async def engine(tmp_path):
    d = DockerStandin(tmp_path / "docker.sock")
    d.add(container("a1", "web", "nginx:1.27", health="healthy"))
    d.add(container("b2", "backup", "restic/restic:0.17", status="exited", exit_code=0))
    await d.start()
    yield d
    await d.stop()


def settings(tmp_path, sock, interval="1"):
    return load_settings(state_dir=tmp_path / "agent", containers_socket=str(sock),
                         containers_interval=interval)


async def run_collector(tmp_path, sock, got: list):
    (tmp_path / "agent").mkdir(exist_ok=True)
    state = State(tmp_path / "agent" / "state.db")
    c = ContainersCollector(settings(tmp_path, sock), lambda e: got.append(e) or True, state)
    return asyncio.create_task(c.run()), state


def changes(got):
    return [e for e in got if isinstance(e, wire.Container)]


async def test_reports_containers_changes_and_metrics(tmp_path, engine):
    got: list = []
    task, state = await run_collector(tmp_path, engine.path, got)
    try:
        await async_wait_for(lambda: len(changes(got)) == 2, 30, what="both containers reported")
        web, backup = sorted(changes(got), key=lambda e: e.name, reverse=True)
        assert (web.name, web.image, web.state, web.health, web.restarts, web.engine, web.previous) == \
               ("web", "nginx:1.27", "running", "healthy", 0, "docker", None)
        assert (backup.state, backup.health, backup.exit_code) == ("exited", None, 0)
        # the second poll has a CPU delta: 0.5 s of 2 CPUs' 2 s -> 50 % of one core
        await async_wait_for(lambda: any("container_cpu_percent{name=\"web\"}" in e.samples
                                         for e in got if isinstance(e, wire.Metrics)), 30, what="cpu")
        m = next(e for e in got if isinstance(e, wire.Metrics) and 'container_cpu_percent{name="web"}' in e.samples)
        assert m.samples['container_cpu_percent{name="web"}'] == 50.0
        assert m.samples['container_memory_bytes{name="web"}'] == 100 * 2**20
        assert not any('name="backup"' in k for e in got if isinstance(e, wire.Metrics) for k in e.samples)
        # unchanged containers are not reported again
        n = len(changes(got))
        polls = len([r for r in engine.requests if r.startswith("/containers/json")])
        await async_wait_for(lambda: len([r for r in engine.requests if r.startswith("/containers/json")]) >= polls + 2,
                             30, what="two more polls")
        assert len(changes(got)) == n
        # it turns unhealthy and is restarted; the backup container is removed
        engine.containers["a1" * 8]["State"]["Health"]["Status"] = "unhealthy"
        engine.containers["a1" * 8]["RestartCount"] = 2
        del engine.containers["b2" * 8]
        await async_wait_for(lambda: len(changes(got)) == n + 2, 30, what="the change and the removal")
        ch = {e.name: e for e in changes(got)[n:]}
        assert (ch["web"].health, ch["web"].restarts, ch["web"].previous) == ("unhealthy", 2, "running/healthy")
        assert (ch["backup"].state, ch["backup"].previous) == ("removed", "exited")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # an agent restart does not report the same containers again
    got2: list = []
    task, state2 = await run_collector(tmp_path, engine.path, got2)
    try:
        polls = len([r for r in engine.requests if r.startswith("/containers/json")])
        await async_wait_for(lambda: len([r for r in engine.requests if r.startswith("/containers/json")]) >= polls + 2,
                             30, what="polls after restart")
        assert changes(got2) == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        state.close()
        state2.close()


async def test_podman_is_named(tmp_path):
    d = await DockerStandin(tmp_path / "podman.sock", engine="Podman Engine").start()
    d.add(container("c3", "db", "docker.io/library/postgres:16", status="restarting", restarts=5, exit_code=1))
    got: list = []
    task, state = await run_collector(tmp_path, d.path, got)
    try:
        await async_wait_for(lambda: changes(got), 30, what="the podman container")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        state.close()
        await d.stop()
    (e,) = changes(got)
    assert (e.engine, e.state, e.restarts, e.exit_code) == ("podman", "restarting", 5, 1)


def test_steps_aside_without_an_engine(tmp_path):
    s = settings(tmp_path, tmp_path / "nope.sock")
    reason = ContainersCollector.unavailable(s)
    assert reason == f"no Docker or Podman API socket ({tmp_path / 'nope.sock'}: absent)"
    (tmp_path / "stale.sock").write_text("")  # a socket file nobody listens on
    why = find_socket(str(tmp_path / "stale.sock"))[1]
    assert "stale.sock" in why and "absent" not in why


def test_bad_interval_is_named(tmp_path):
    with pytest.raises(ValueError, match="containers_interval must be 1..86400 s"):
        ContainersCollector(settings(tmp_path, tmp_path / "x.sock", "0.1"), lambda e: True, None)


def test_cpu_percent_needs_two_samples_and_survives_counter_resets():
    s1 = {"cpu_stats": {"cpu_usage": {"total_usage": 100}, "system_cpu_usage": 1000, "online_cpus": 4}}
    s2 = {"cpu_stats": {"cpu_usage": {"total_usage": 150}, "system_cpu_usage": 1200, "online_cpus": 4}}
    pct, prev = cpu_percent(None, s1)
    assert pct is None
    assert cpu_percent(prev, s2)[0] == 100.0  # 50/200 of 4 CPUs = one full core
    assert cpu_percent((200, 1300), s2)[0] is None  # restarted container: counters went back
