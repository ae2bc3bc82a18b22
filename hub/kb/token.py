"""The hub's admin API token: a random secret in DATA_DIR/admin.token (mode 0600).

Whoever can read that file is the hub's administrator anyway; the token lets their tools
(scripts, a browser extension, curl) call the read APIs that node credentials also reach,
such as GET /v1/kb/search, without enrolling a fake node.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

FILE = "admin.token"


def admin_token(data_dir: Path) -> str:
    """The token, created on first use. O_EXCL: two processes racing still agree on one."""
    path = Path(data_dir) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    token = "hla_" + secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def existing_token(data_dir: Path) -> str | None:
    try:
        t = (Path(data_dir) / FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return t or None


def is_admin(data_dir: Path, presented: str) -> bool:
    token = existing_token(data_dir)
    if not token:
        return False
    return hmac.compare_digest(token.encode(), presented.encode())
