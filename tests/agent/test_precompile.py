"""The unit's ExecStartPre compiles every module the agent then loads: an agent started after
it compiles nothing itself (compiling in the agent left 3.3 MB of its heap behind)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import join_agent, wait_for


def compiled(prefix: Path) -> set[str]:
    return {str(p.relative_to(prefix)) for p in prefix.rglob("*.pyc")}


def test_an_agent_after_precompile_compiles_nothing_itself(tmp_path, hub_process, agent_process):
    prefix = tmp_path / "pycache"
    # as the unit runs both; "" unsets a PYTHONDONTWRITEBYTECODE the test run may have
    env = {"PYTHONOPTIMIZE": "2", "PYTHONPYCACHEPREFIX": str(prefix), "PYTHONDONTWRITEBYTECODE": ""}
    subprocess.run([sys.executable, "-m", "agent.precompile"], check=True, timeout=300,
                   env={**__import__("os").environ, **env})
    before = compiled(prefix)
    assert any(p.endswith("agent/runtime.cpython-311.opt-2.pyc".replace("311", f"{sys.version_info[0]}{sys.version_info[1]}"))
               for p in before), sorted(before)[:20]

    hub = hub_process().start()
    state, watched = tmp_path / "agent", tmp_path / "etc"
    watched.mkdir()
    join_agent(hub.url, hub.enroll("n1"), state)
    a = agent_process(state, "--watch", str(watched), env=env)  # every default collector
    wait_for(lambda: hub.query("SELECT 1 FROM events WHERE node = 'n1' AND kind = 'metrics'"), 60,
             what="metrics at the hub")
    time.sleep(1)
    (watched / "app.conf").write_text("port = 8080\n")  # a change: hashing, shipping at once
    want = hashlib.sha256(b"port = 8080\n").hexdigest()
    wait_for(lambda: hub.query("SELECT 1 FROM events_full WHERE kind = 'file' AND json_extract(data, '$.sha256') = ?",
                               (want,)), 60, what="the file change at the hub")
    assert "Traceback" not in a.output()
    new = sorted(compiled(prefix) - before)
    assert new == [], "\n".join(new)
