"""mypy over agent/ and hub/ with the settings in pyproject.toml ([tool.mypy]): both packages
ship py.typed, so what they declare has to check. Modules that are fully annotated are held
to it there (disallow_untyped_defs)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed")
def test_mypy_clean():
    r = subprocess.run([sys.executable, "-m", "mypy", "agent", "hub"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-8000:]
