"""Finding this machine's tailnet address (Tailscale), if tailscaled runs here."""

from __future__ import annotations

import shutil
import subprocess


def local_address() -> str | None:
    """The first Tailscale IPv4 address from `tailscale ip -4`, or None without tailscaled."""
    exe = shutil.which("tailscale")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "ip", "-4"], capture_output=True, text=True, timeout=3)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    for line in out.stdout.split():
        if line.startswith("100."):
            return line.strip()
    return None
