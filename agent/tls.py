"""The agent's view of a hub that serves its own certificate (LANs without Tailscale)."""

from __future__ import annotations

import ssl


def pinned_context(pem: str) -> ssl.SSLContext:
    """Trust exactly this certificate. The hostname is not checked: the pin already names the
    one certificate accepted, whatever address the node uses to reach the hub."""
    ctx = ssl.create_default_context(cadata=pem)
    ctx.check_hostname = False
    return ctx
