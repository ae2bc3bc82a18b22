"""The hub's playbook registry: the playbooks proposals may name.

Loaded from ``settings.playbooks_dir`` or the shipped ``playbooks/``. A bad file is logged
and left out; it never hides the good ones. The registry re-reads a file whose mtime or size
changed, so a proposal always records the SHA-256 of the script as it is on disk now.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from agent import playbook as pbmod
from agent.playbook import Playbook, PlaybookError
from agent.settings import Settings
from hub import paths

log = logging.getLogger(__name__)


def playbooks_dir(settings: Settings) -> Path:
    return Path(settings.playbooks_dir) if settings.playbooks_dir else paths.shipped("playbooks")


class Registry:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self._stamp: tuple | None = None
        self._books: dict[str, Playbook] = {}
        self.errors: list[PlaybookError] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        return cls(playbooks_dir(settings))

    def _fingerprint(self) -> tuple:
        try:
            return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in self.dir.glob("*.sh")))
        except OSError:
            return ()

    def all(self) -> dict[str, Playbook]:
        stamp = self._fingerprint()
        if stamp != self._stamp:
            errors: list[PlaybookError] = []
            self._books = pbmod.load_dir(self.dir, errors)
            for e in errors:
                if not self.errors or str(e) not in {str(x) for x in self.errors}:
                    log.warning("playbook left out: %s", e)
            self.errors = errors
            self._stamp = stamp
        return self._books

    def get(self, name: str) -> Playbook | None:
        return self.all().get(name)


def lint(pb_path: Path) -> list[str]:
    """`bash -n` and (when installed) shellcheck on a script and its header's snippets.
    Returns the problems found, empty when clean."""
    problems: list[str] = []
    r = subprocess.run(["bash", "-n", str(pb_path)], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        problems.append(f"bash -n: {r.stderr.strip()}")
    sc = shutil.which("shellcheck")
    try:
        pb = pbmod.load(pb_path)
    except PlaybookError:
        pb = None
    snippets = {k: getattr(pb, k) for k in ("check", "verify", "rollback") if pb and getattr(pb, k)}
    for step, code in snippets.items():
        r = subprocess.run(["bash", "-n", "-c", code], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            problems.append(f"{step}: bash -n: {r.stderr.strip()}")
    if sc:
        r = subprocess.run([sc, "-x", "-S", "warning", str(pb_path)], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            problems.append(f"shellcheck:\n{r.stdout.strip()}")
        for step, code in snippets.items():
            with tempfile.NamedTemporaryFile("w", suffix=".sh") as f:
                f.write("#!/usr/bin/env bash\n" + code + "\n")
                f.flush()
                r = subprocess.run([sc, "-S", "warning", "-e", "SC2154", f.name], capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                problems.append(f"{step}: shellcheck:\n{r.stdout.strip()}")
    return problems
