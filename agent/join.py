"""`homelab-agent join`: spend a join token for a node credential.

With ``--fingerprint`` (a hub serving its own TLS certificate) the certificate the hub
presents is checked against the fingerprint *before* the token is sent, so a token never
reaches an impostor; the certificate is then kept as the agent's only trust anchor.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from .http import HubClient
from .tls import pinned_context


async def fetch_pinned_cert(hub_url: str, fingerprint: str, timeout: float = 15) -> str:
    """Connect, read the hub's certificate, and return it as PEM if its SHA-256 matches."""
    u = urlsplit(hub_url)
    if u.scheme != "https":
        raise RuntimeError(f"--fingerprint needs an https:// hub URL, got {hub_url!r}")
    want = fingerprint.strip()
    if not want.upper().startswith("SHA256:"):
        raise RuntimeError(f"fingerprint must look like SHA256:<64 hex digits>, got {fingerprint!r}")
    want_hex = want[7:].replace(":", "").lower()
    probe = ssl.create_default_context()
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE  # verified below, by fingerprint, before anything is sent
    _r, w = await asyncio.wait_for(
        asyncio.open_connection(u.hostname, u.port or 443, ssl=probe), timeout)
    try:
        der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        w.close()
    got = hashlib.sha256(der).hexdigest()
    if not hmac.compare_digest(got, want_hex):
        raise RuntimeError(f"the hub's certificate is SHA256:{got}, not {want}: refusing to send the token")
    return ssl.DER_cert_to_PEM_cert(der)


async def join(hub_url: str, token: str, fingerprint: str | None = None) -> tuple[str, dict]:
    pem = await fetch_pinned_cert(hub_url, fingerprint) if fingerprint else None
    client = HubClient(hub_url, ssl=pinned_context(pem) if pem else None, timeout=30)
    try:
        r = await client.request("POST", "/v1/join", json.dumps(
            {"token": token, "hostname": socket.gethostname()}).encode(),
            {"Content-Type": "application/json"})
    finally:
        await client.close()
    body = r.json()
    if r.status != 200:
        raise RuntimeError(f"hub answered {r.status}: {body.get('error', r.reason)}")
    if pem:
        body["hub_cert"] = pem
    return body["node"], body


async def join_and_save(hub_url: str, token: str, state_dir: Path, fingerprint: str | None = None) -> str:
    """Join and persist the identity (credential, hub key, pinned certificate). Returns the node."""
    from .config import write_identity

    node, body = await join(hub_url, token, fingerprint)
    write_identity(state_dir, hub_url, node, body["credential"], body["hub_public_key"])
    hub_last = int(body.get("last_seq") or 0)
    if hub_last:  # this node has a past on the hub: never reuse its numbers
        from .spool import Spool

        spool = Spool(state_dir / "spool.db", 2**40)
        try:
            spool.skip_to(hub_last)
        finally:
            spool.close()
    pinned = state_dir / "hub.crt"  # the shipper's only trust anchor when present
    if body.get("hub_cert"):
        pinned.write_text(body["hub_cert"])
    else:
        pinned.unlink(missing_ok=True)
    return node
