"""One-command onboarding: what the hub serves to a new machine so it needs no internet.

The hub builds, once per version, the agent's own wheel (``pip wheel --no-deps`` of this
project) and a wheelhouse of the agent's dependencies (``pip wheel`` from the hub's pip
cache, the index, or a local ``wheelhouse`` directory), plus pip itself so the node's
virtualenv needs neither ensurepip nor an index. ``bootstrap.sh`` is rendered per join
token; it downloads those files from the hub, checks their SHA-256, creates the venv,
joins, installs ``homelab-agent.service`` and starts the agent. Re-running it is harmless.

Only holders of a join token (until it expires) may download anything here.
"""

from __future__ import annotations

import email.parser
import fcntl
import hashlib
import json
import logging
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from agent import __version__
from hub import paths
from hub.auth import hash_secret
from hub.errors import HubError, Unauthorized

log = logging.getLogger(__name__)

# Requirements of the project that only the hub uses; the node's venv skips them.
HUB_ONLY = {"datasette", "sqlite-utils", "rich", "jsonschema", "prometheus-client", "tailscale",
            "llama-cpp-python", "apprise"}
WHEEL_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+\.whl$")
SOURCE_PARTS = ("agent", "hub", "pyproject.toml", "README.md", "playbooks", "systemd", "rules", "datasette")


class BuildError(HubError):
    status = 503


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def token_node(db: sqlite3.Connection, token: str) -> str:
    """The node a join token belongs to, if it may still download the bootstrap files.

    A used token keeps working for downloads until it expires, so re-running the same
    one-liner is harmless (the script does not join twice)."""
    if not isinstance(token, str) or not token.startswith("hlj_") or len(token) > 200:
        raise Unauthorized("missing or malformed join token")
    row = db.execute("SELECT node, expires FROM join_tokens WHERE token_hash = ?",
                     (hash_secret(token),)).fetchone()
    if row is None:
        raise Unauthorized("unknown join token")
    if row[1] < time.time():
        raise Unauthorized("join token expired: run `homelab-hub enroll NAME` again")
    return row[0]


# -- artifacts -----------------------------------------------------------------------------


class Artifacts:
    """The files under ``<bootstrap_dir>/<version>/``: the agent wheel, ``wheelhouse/`` and
    ``index.json`` (name -> sha256 of every file a node downloads)."""

    def __init__(self, base: Path, find_links: Path | None = None):
        py = f"py{sys.version_info[0]}{sys.version_info[1]}"
        # keyed by the code too, so a changed checkout never serves a stale wheel
        self.dir = Path(base) / f"{__version__}-{py}-{source_digest()[:12]}"
        self.find_links = find_links

    @property
    def index_path(self) -> Path:
        return self.dir / "index.json"

    def index(self) -> dict:
        return json.loads(self.index_path.read_text())

    def ready(self) -> bool:
        return self.index_path.exists()

    def path_of(self, name: str) -> Path:
        """A file listed in the index (anything else is refused: no path tricks)."""
        idx = self.index()
        if name == idx["agent_wheel"]:
            return self.dir / name
        if WHEEL_NAME_RE.match(name) and name in idx["wheelhouse"]:
            return self.dir / "wheelhouse" / name
        raise KeyError(name)

    def ensure(self) -> dict:
        """Build what is missing (blocking; minutes the first time). Safe across processes."""
        if self.ready():
            return self.index()
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir.parent / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.ready():
                self._build()
        return self.index()

    def _pip(self, *args: str, cwd: Path | None = None) -> None:
        argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=1800, cwd=cwd)
        if r.returncode != 0:
            raise BuildError(f"`{' '.join(argv[2:6])} ...` failed: {r.stderr.strip()[-1500:]}")

    def _build(self) -> None:
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=self.dir.parent))
        try:
            wheel = self._agent_wheel(work)
            reqs = agent_requirements(wheel)
            house = work / "wheelhouse"
            house.mkdir()
            # a configured wheelhouse means "offline": never ask an index
            links = ["--no-index", "--find-links", str(self.find_links)] if self.find_links else []
            self._pip("wheel", "-q", "-w", str(house), *links, "pip", *reqs)
            (house / "requirements.txt").write_text("\n".join(reqs) + "\n")
            wheels = sorted(p.name for p in house.glob("*.whl"))
            idx = {
                "version": __version__,
                "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
                "agent_wheel": wheel.name,
                "requirements": reqs,
                "files": {wheel.name: sha256_of(wheel),
                          **{n: sha256_of(house / n) for n in wheels}},
                "wheelhouse": wheels,
            }
            final_house = self.dir / "wheelhouse"
            if final_house.exists():
                shutil.rmtree(final_house)
            shutil.move(str(house), final_house)
            shutil.move(str(wheel), self.dir / wheel.name)
            tmp = self.dir / "index.json.tmp"
            tmp.write_text(json.dumps(idx, indent=2, sort_keys=True))
            tmp.replace(self.index_path)  # last: its presence means "complete"
            for old in self.dir.parent.iterdir():  # builds of older code: never served again
                if old.is_dir() and old != self.dir and not old.name.startswith("."):
                    shutil.rmtree(old, ignore_errors=True)
            log.info("bootstrap artifacts for %s ready in %s (%d wheels)", __version__, self.dir, len(wheels))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _agent_wheel(self, work: Path) -> Path:
        """A prebuilt wheel from the wheelhouse, else ``pip wheel --no-deps`` of this project,
        from a copy so the tree stays clean."""
        out = work / "dist"
        # first: a hub installed from wheels (systemd/homelab-hub.service) has no source tree
        prebuilt = sorted(self.find_links.glob(f"sentient_homelab-{__version__}-*.whl")) if self.find_links else []
        if prebuilt:
            out.mkdir()
            shutil.copy2(prebuilt[-1], out / prebuilt[-1].name)
            return out / prebuilt[-1].name
        repo = paths.REPO
        if not (repo / "pyproject.toml").exists():
            raise BuildError(
                f"no project source at {repo} to build the agent wheel from; put a built "
                f"sentient_homelab-{__version__}-*.whl into the `wheelhouse` directory setting")
        src = work / "src"
        src.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for part in SOURCE_PARTS:
            p = repo / part
            if p.is_dir():
                shutil.copytree(p, src / part, ignore=ignore)
            elif p.is_file():
                shutil.copy2(p, src / part)
        try:
            self._pip("wheel", "-q", "--no-deps", "-w", str(out), str(src))
        except BuildError:
            # offline, no cached setuptools for an isolated build: use the hub's own
            self._pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src))
        (wheel,) = out.glob("*.whl")
        return wheel


def source_digest() -> str:
    """SHA-256 over what nodes run: the agent package, pyproject, shipped playbooks/units."""
    h = hashlib.sha256()
    import agent

    # the agent package itself, wherever it is imported from (this module's own location
    # moved once, and a digest over a missing directory served stale wheels to every node)
    roots = [Path(agent.__file__).resolve().parent, paths.REPO / "pyproject.toml",
             paths.shipped("playbooks"), paths.shipped("systemd")]
    for root in roots:
        files = sorted(root.rglob("*")) if root.is_dir() else [root] if root.is_file() else []
        for f in files:
            if f.is_file() and f.suffix != ".pyc" and "__pycache__" not in f.parts:
                h.update(f.as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def agent_requirements(wheel: Path) -> list[str]:
    """The wheel's own Requires-Dist, minus extras and what only the hub needs."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(z.read(meta).decode())
    reqs = []
    for r in msg.get_all("Requires-Dist") or []:
        if "extra ==" in r:
            continue
        name = re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0]
        if _norm(name) not in HUB_ONLY:
            reqs.append(r.strip())
    return sorted(reqs, key=str.lower)
