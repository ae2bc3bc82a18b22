"""Bad agent settings are an error naming the setting and what is allowed, exit status 2 — not
a warning and an agent running with nothing to do (issue 19, item 8). Real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def agent(tmp_path, *args, env=None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    return subprocess.run([sys.executable, "-m", "agent", *args, "--state-dir", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=60, env={**clean, **(env or {})})


@pytest.mark.parametrize("args,env,needle", [
    (["--collectors", "metrix"], {}, "--collectors: collectors: unknown collector(s) 'metrix' (allowed: metrics, files,"),
    (["--collectors", "metrics,filez"], {}, "unknown collector(s) 'filez'"),
    (["--metrics-interval", "0"], {}, "--metrics-interval: metrics_interval: '0' is too small: the metrics collector"
                                      " samples at most once a second (1s or more)"),
    (["--metrics-interval", "soon"], {}, "--metrics-interval: metrics_interval: expected a duration"),
    ([], {"HOMELAB_AGENT_COLLECTORS": "metrix"}, "$HOMELAB_AGENT_COLLECTORS: collectors: unknown collector(s)"),
    ([], {"HOMELAB_AGENT_MAX_RISK": "yolo"}, "max_risk: 'yolo' is not a risk tier (allowed: read-only, change, destructive)"),
    ([], {"HOMELAB_AGENT_HEARTBEAT": "0"}, "heartbeat: '0' is not allowed: must be a duration above zero"),
    ([], {"HOMELAB_AGENT_QUEUE_SIZE": "0"}, "queue_size: '0' is too small: at least 1"),
])
def test_run_refuses_bad_settings_with_status_2(tmp_path, args, env, needle):
    r = agent(tmp_path, "run", *args, env=env)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert needle in r.stderr


def test_a_bad_value_in_the_config_file_names_file_line_and_setting(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "agent.toml").write_text('node = "n1"\nmetrics_interval = 0\n')
    r = agent(tmp_path, "status")
    assert r.returncode == 2
    assert f"{tmp_path / 'state' / 'agent.toml'}:2: metrics_interval: 0 is too small" in r.stderr


def test_good_settings_get_past_validation(tmp_path):
    r = agent(tmp_path, "run", "--collectors", "metrics,files", "--metrics-interval", "1")
    assert r.returncode == 1 and "has not joined a hub yet" in r.stderr  # the next check, not a setting


def test_a_named_data_dir_needs_no_home(tmp_path, monkeypatch):
    # a unit's user without a passwd entry has no home: the hub died in Path.home() although
    # its unit named the directory (found running systemd/homelab-hub.service in the lab)
    from pathlib import Path

    from hub.config import load_settings

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOMELAB_HUB_DATA_DIR", str(tmp_path))
    assert load_settings().data_dir == tmp_path
