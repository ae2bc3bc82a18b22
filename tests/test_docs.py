"""The docs do not lie: generated references are current, the README's commands are the real ones."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_references_are_current():
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "generate.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_every_command_and_setting_is_in_the_docs():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    from agent.config import AGENT_OPTS
    from hub.config import HUB_OPTS

    docs = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    commands = generate.all_commands()
    assert "homelab-hub up" in commands and "homelab-agent run" in commands
    for c in commands:
        assert f"`{c}`" in docs, f"command {c} is not documented"
    for o in (*HUB_OPTS, *AGENT_OPTS):
        assert o.env in docs and f"`{o.key}`" in docs, f"setting {o.key} is not documented"


def test_readme_first_screen_has_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:40])
    blocks = re.findall(r"```sh\n(.+?)\n```", first_screen, re.S)
    assert len(blocks) == 2, blocks
    run, test = blocks
    assert "homelab-hub up" in run and "pip install" in run
    ci = (ROOT / ".ci" / "run").read_text()
    assert test.strip() in ci
    for doc in re.findall(r"\]\((docs/[^)]+)\)", readme):
        assert (ROOT / doc).exists(), f"README links to missing {doc}"


def test_both_readme_commands_install_the_pinned_versions():
    readme = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    run = re.findall(r"```sh\n(.+?)\n```", readme, re.S)[0]
    installs = [c for c in run.split("&&") if "pip install" in c]
    assert installs and all("-c .ci/constraints.txt" in c for c in installs), installs
    setup = (ROOT / "tests" / "run").read_text()
    assert all("-c .ci/constraints.txt" in line for line in setup.splitlines() if "pip install" in line
               and "--upgrade pip" not in line)


def test_constraints_pin_every_declared_dependency():
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    pinned = {}
    for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[name.lower().replace("_", "-")] = version
    for spec in declared:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in pinned, f"{name} is declared in pyproject.toml but not pinned: run .ci/freeze"
        assert req.specifier.contains(pinned[name]), f"{name}=={pinned[name]} breaks {spec}"
