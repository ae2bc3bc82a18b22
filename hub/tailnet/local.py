"""Tailscale on the hub's machine: its tailnet address, and who a connecting peer is.

Both come from tailscaled, found through the ``tailscale`` CLI or its LocalAPI (HTTP over the
Unix socket ``/var/run/tailscale/tailscaled.sock``). ``whois`` maps a peer's address to its
tailnet node (a stable id that survives address changes) and user; the hub records that per
enrolled node and refuses an agent whose identity does not match (hub/tailnet/web.py).
Without tailscaled every function here answers None and the hub works on its own.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/run/tailscale/tailscaled.sock"
LOCALAPI_HOST = "local-tailscaled.sock"  # tailscaled checks the Host header
DOWN_RETRY = 30.0  # seconds between attempts once tailscaled stopped answering


def socket_path() -> str:
    return os.environ.get("HOMELAB_HUB_TAILSCALE_SOCKET") or DEFAULT_SOCKET


@dataclass(frozen=True)
class Identity:
    """A tailnet peer: ``id`` (the node's StableID) is what enrolment is matched on."""

    id: str
    name: str
    user: str

    def to_text(self) -> str:
        return json.dumps({"id": self.id, "name": self.name, "user": self.user}, sort_keys=True)

    @classmethod
    def from_text(cls, text: str) -> Identity:
        d = json.loads(text)
        return cls(str(d["id"]), str(d.get("name", "")), str(d.get("user", "")))

    @classmethod
    def from_whois(cls, body: dict) -> Identity:
        node = body.get("Node") or {}
        user = body.get("UserProfile") or {}
        stable = node.get("StableID") or str(node.get("ID") or "")
        if not stable:
            raise ValueError("whois answer has no Node.StableID")
        name = str(node.get("Name") or node.get("ComputedName") or "").rstrip(".")
        return cls(str(stable), name, str(user.get("LoginName") or ""))

    def __str__(self) -> str:
        who = f" of {self.user}" if self.user else ""
        return f"{self.name or '?'} ({self.id}){who}"


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__(LOCALAPI_HOST, timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def localapi_status(path: str | None = None, timeout: float = 3.0) -> dict | None:
    """GET /localapi/v0/status, synchronously (startup code). None if tailscaled is absent."""
    path = path or socket_path()
    if not os.path.exists(path):
        return None
    conn = _UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", "/localapi/v0/status", headers={"Host": LOCALAPI_HOST})
        r = conn.getresponse()
        if r.status != 200:
            return None
        return json.loads(r.read())
    except (OSError, ValueError, http.client.HTTPException) as e:
        log.info("tailscaled LocalAPI at %s did not answer: %s", path, e)
        return None
    finally:
        conn.close()


def _cli_address() -> str | None:
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


def local_address(path: str | None = None) -> str | None:
    """This machine's first tailnet IPv4 address: `tailscale ip -4`, else the LocalAPI's
    status (Self.TailscaleIPs); None without tailscaled."""
    addr = _cli_address()
    if addr:
        return addr
    status = localapi_status(path)
    if not status:
        return None
    for ip in (status.get("Self") or {}).get("TailscaleIPs") or status.get("TailscaleIPs") or []:
        if "." in ip:
            return ip
    return None


class Whois:
    """Asks tailscaled who a peer is; answers are cached per address for ``ttl`` seconds.
    ``lookup`` returns an Identity, None for a peer that is not on the tailnet, and raises
    ``LocalAPIUnavailable`` when tailscaled cannot be asked at all."""

    def __init__(self, path: str, ttl: float = 60.0):
        self.path = path
        self.ttl = ttl
        self.cache: dict[str, tuple[float, Identity | None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.down_until = 0.0

    def available(self) -> bool:
        return os.path.exists(self.path)

    def down(self) -> bool:
        """True for a while after tailscaled failed to answer: do not ask (or log) per request."""
        return time.monotonic() < self.down_until

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.path),
                timeout=aiohttp.ClientTimeout(total=3),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def lookup(self, ip: str, port: int | None = None) -> Identity | None:
        now = time.monotonic()
        hit = self.cache.get(ip)
        if hit and hit[0] > now:
            return hit[1]
        addr = f"[{ip}]:{port}" if ":" in ip and port else f"{ip}:{port}" if port else ip
        try:
            async with self.session().get(
                f"http://{LOCALAPI_HOST}/localapi/v0/whois?addr={quote(addr)}",
                headers={"Host": LOCALAPI_HOST},
            ) as r:
                if r.status == 404:
                    ident = None  # not a tailnet peer
                elif r.status != 200:
                    raise LocalAPIUnavailable(f"whois answered {r.status}: {(await r.text())[:200]}")
                else:
                    ident = Identity.from_whois(await r.json(content_type=None))
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, LocalAPIUnavailable) as e:
            self.down_until = time.monotonic() + DOWN_RETRY
            raise LocalAPIUnavailable(f"tailscaled LocalAPI ({self.path}): {e}") from None
        if len(self.cache) > 4096:
            self.cache.clear()
        self.cache[ip] = (now + self.ttl, ident)
        return ident


class LocalAPIUnavailable(Exception):
    pass
