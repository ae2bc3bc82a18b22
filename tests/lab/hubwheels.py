"""The wheelhouse a hub is installed from (docs/onboarding.md, "The hub as a service"), made on
the host for lab nodes, which have no internet.

The dependencies' wheels are built once per machine, keyed by pyproject.toml and the CI
constraints, under the lab's cache (beside the node image); this checkout's own wheel is built
fresh for each lab (seconds), so a node always runs the code under test.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / ".ci" / "constraints.txt"
# what the project's wheel is built from (its data files included: units, playbooks, rules, docs)
PARTS = ("agent", "hub", "pyproject.toml", "README.md", "playbooks", "systemd", "rules",
         "datasette", "docs")


def pip(*args: str, timeout: float = 900) -> None:
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args[:3])} ... exited {r.returncode}: {r.stderr[-2000:]}")


def source_copy(dest: Path) -> Path:
    """A copy of the checkout to build from, so the tree gets no build/ or egg-info."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for part in PARTS:
        p = REPO / part
        if p.is_dir():
            shutil.copytree(p, dest / part, ignore=ignore)
        else:
            shutil.copy2(p, dest / part)
    return dest


def dependencies(cache: Path) -> Path:
    """Wheels of the hub's dependencies (no [ai] extra: no llama-cpp-python), pip, and
    setuptools to build the project's own wheel offline, for this Python; built once per
    machine under a lock."""
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + CONSTRAINTS.read_bytes()
                         + sys.version.encode()).hexdigest()[:12]
    base = cache / "hub-wheels"
    house = base / key
    if (house / "ready").exists():
        return house
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (house / "ready").exists():
            return house
        with tempfile.TemporaryDirectory(dir=base, prefix=".build-") as work:
            part = Path(work) / "house"
            pip("wheel", "-w", str(part), "-c", str(CONSTRAINTS),
                str(source_copy(Path(work) / "src")), "pip", "setuptools>=68")
            for own in part.glob("sentient_homelab-*.whl"):
                own.unlink()  # built per lab from the code under test
            shutil.rmtree(house, ignore_errors=True)
            part.rename(house)
        (house / "ready").write_text(key + "\n")
        for old in base.iterdir():  # other dependency sets are never used again
            if old.is_dir() and old != house and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
    return house


def wheelhouse(dest: Path, cache: Path) -> Path:
    """``dest``: every wheel the hub needs, its own (from this checkout) included."""
    dest.mkdir(parents=True)
    deps = dependencies(cache)
    for whl in deps.glob("*.whl"):
        shutil.copy2(whl, dest / whl.name)
    with tempfile.TemporaryDirectory() as work:
        src = source_copy(Path(work) / "src")
        # the build backend from the cached wheels too: no index is asked
        pip("wheel", "--no-deps", "--no-index", "--find-links", str(deps), "-w", str(dest), str(src))
    return dest
