"""The agent and TLS: the pinned certificate of a hub that serves its own, and keeping OpenSSL
out of an agent that never speaks TLS.

OpenSSL's libcrypto is the largest single piece of the running agent's memory (~4.7 MB of
~31 MB resident, docs/performance.md), and nothing in an agent whose hub is ``http://`` uses
it: on a tailnet WireGuard already encrypts the hop. It gets loaded anyway, twice over:
asyncio imports ``ssl`` whether or not a connection uses TLS, and ``hashlib`` builds its
constructors on libcrypto. ``run`` therefore marks both modules as absent before anything
imports them, and the standard library falls back to what it does on a Python built without
OpenSSL, which it supports: asyncio runs plain connections without ``ssl``, and ``hashlib``
uses Python's own SHA-256 (slower on large files: 3.3 ms per MiB against 0.6 ms, which a
changed file under a watched tree costs once).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

    from .settings import Settings

# What loads libcrypto (and libssl): the ssl module and hashlib's OpenSSL backend.
OPENSSL_MODULES = ("ssl", "_hashlib")


def pinned_context(pem: str) -> ssl.SSLContext:
    """Trust exactly this certificate. The hostname is not checked: the pin already names the
    one certificate accepted, whatever address the node uses to reach the hub."""
    import ssl

    ctx = ssl.create_default_context(cadata=pem)
    ctx.check_hostname = False
    return ctx


def openssl_needed(settings: Settings) -> str | None:
    """Why this agent needs OpenSSL, or None when nothing it will do speaks TLS."""
    if (settings.hub_url or "").lower().startswith("https:"):
        return "the hub is https://"
    if (settings.state_dir / "hub.crt").exists():
        return "the hub's certificate is pinned (hub.crt)"
    if "checks" in settings.collectors and settings.checks:
        return "active checks are configured (http and tls checks speak TLS)"
    return None


def keep_openssl_out() -> bool:
    """Mark OpenSSL's modules as absent (``None`` in ``sys.modules``: an import of them raises
    ImportError, which asyncio and hashlib handle). Only effective before either is imported,
    so ``run`` calls it before importing the runtime; returns whether it took effect."""
    if any(sys.modules.get(m) is not None for m in OPENSSL_MODULES):
        return False
    for m in OPENSSL_MODULES:
        sys.modules[m] = None  # type: ignore[assignment]
    return True
