"""Who may see the dashboard, and from which address.

The pages show node names, alerts, commands and changes, so they are the administrator's:
a browser on the hub itself (a loopback peer) is the administrator; anyone else on the tailnet
presents the admin token (`homelab-hub kb token`) once, on /login, and keeps a session cookie
(HttpOnly, SameSite=Strict, Secure under TLS) holding an HMAC of the token, never the token.

DNS rebinding: a page on evil.example whose name re-resolves to 127.0.0.1 would make the
browser send our cookies' worth of requests to us with `Host: evil.example`. So a request is
served only when its Host is an IP literal, localhost, the hub's public URL host, or this
machine's own names.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp import web

from hub.kb import existing_token

COOKIE = "homelab_admin"


def host_only(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8470
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.rsplit(":", 1)[0]
    return host


def allowed_hosts(public_url: str, tailnet_status: dict | None = None) -> set[str]:
    """The names this hub answers to: localhost, its own host names, its public URL's host and
    its MagicDNS name (from tailscaled's status, when there is one)."""
    names = {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}
    host = urlsplit(public_url).hostname
    if host:
        names.add(host.lower())
    dns = ((tailnet_status or {}).get("Self") or {}).get("DNSName") or ""
    if dns:
        names.add(dns.lower().rstrip("."))
        names.add(dns.lower().split(".")[0])
    return names


def host_ok(header: str | None, allowed: set[str]) -> bool:
    if not header:
        return False
    host = host_only(header)
    try:
        ipaddress.ip_address(host)
        return True  # a literal address is what the browser asked for: nothing to rebind
    except ValueError:
        pass
    return host.rstrip(".") in allowed


def is_loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False  # a unix socket or no peer address: not provably local


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"homelab dashboard session", hashlib.sha256).hexdigest()


def is_admin(request: web.Request, data_dir) -> bool:
    if is_loopback(request):
        return True
    token = existing_token(data_dir)
    cookie = request.cookies.get(COOKIE, "")
    return token is not None and bool(cookie) and hmac.compare_digest(cookie, session_value(token))


def token_ok(data_dir, presented: str) -> bool:
    token = existing_token(data_dir)
    return token is not None and bool(presented) and hmac.compare_digest(token.encode(), presented.strip().encode())
