"""Where the shipped rules/, playbooks/ and datasette/ folders are.

In a source checkout (or an editable install) they sit next to the ``hub`` package;
a wheel installs them under ``<prefix>/share/homelab``. ``HOMELAB_SHARE`` overrides both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def shipped(name: str) -> Path:
    env = os.environ.get("HOMELAB_SHARE")
    for base in ([Path(env)] if env else []) + [REPO, Path(sys.prefix) / "share" / "homelab"]:
        if (base / name).is_dir():
            return base / name
    return REPO / name
