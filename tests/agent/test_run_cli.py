"""`homelab-agent run` is parsed without click (agent/cli.py) so the running agent never
imports it; everything else goes to click. The two parsers must agree on every command line
the fast one accepts, and the fast one must step aside for anything else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from agent.cli import parse_run
from agent.cli_click import run as click_run

ROOT = Path(__file__).resolve().parents[2]


def clicks(argv: list[str]) -> dict:
    ctx = click_run.make_context("run", list(argv[1:]))
    p = dict(ctx.params)
    return {**p, "watch": list(p["watch"]), "log_files": list(p["log_files"])}


OPTS = ["--state-dir", "--watch", "--log-file", "--collectors", "--metrics-interval",
        "--exec", "--no-exec", "-v", "--verbose", "--help", "--bogus", "-x", "--", "-vv", "--exec=yes"]
VALUES = ["/srv/data", "a b", "x=y", "metrics,files", "30", "", "-v", "--watch", "--state-dir=/x", "é"]


@st.composite
def command_lines(draw):
    argv = ["run"]
    for _ in range(draw(st.integers(0, 6))):
        opt = draw(st.sampled_from(OPTS))
        form = draw(st.integers(0, 2))
        if form == 0:
            argv.append(opt)
        elif form == 1:
            argv += [opt, draw(st.sampled_from(VALUES))]
        else:
            argv.append(f"{opt}={draw(st.sampled_from(VALUES))}")
    return argv


@given(command_lines())
def test_whatever_the_fast_parser_accepts_click_parses_the_same(argv):
    fast = parse_run(argv)
    if fast is not None:
        assert fast == clicks(argv), argv


def test_what_the_unit_and_the_bench_run_takes_the_fast_path():
    assert parse_run(["run"]) == clicks(["run"])
    for argv in (["run", "--state-dir", "/var/lib/x", "--watch", "/etc", "--watch=/srv"],
                 ["run", "-v", "--no-exec", "--collectors", "metrics,files", "--metrics-interval=5",
                  "--log-file", "/var/log/syslog", "--exec"]):
        assert parse_run(argv) is not None and parse_run(argv) == clicks(argv)
    for argv in ([], ["status"], ["run", "--help"], ["run", "--watch"], ["run", "--bogus"], ["--version"]):
        assert parse_run(argv) is None


def agent(*args, env=None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "agent", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env={**clean, **(env or {})})


def test_run_never_imports_click_and_the_rest_still_has_it(tmp_path):
    r = agent("run", "--state-dir", str(tmp_path), "--collectors", "metrics")
    assert r.returncode == 1 and "Error: " in r.stderr and "has not joined a hub yet" in r.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")]
    assert "agent.runtime" in imported and "click" not in imported and "psutil" not in imported
    r = agent("run", "--state-dir", str(tmp_path), "--metrics-interval", "0")
    assert r.returncode == 2 and "Error: --metrics-interval: metrics_interval:" in r.stderr
    r = agent("run", "--help")
    assert r.returncode == 0 and "Collect and ship events" in r.stdout and "--state-dir" in r.stdout
    r = agent("run", "--bogus")
    assert r.returncode == 2 and "No such option '--bogus'" in r.stderr
    r = agent("run", "--watch")
    assert r.returncode == 2 and "requires an argument" in r.stderr
