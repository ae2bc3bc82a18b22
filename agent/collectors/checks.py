"""Active checks, as Uptime Kuma and Monit run them: HTTP(S) (status, latency, expected text),
TCP port, TLS certificate expiry and DNS resolution, each on its own interval, each run one
``check`` event with its latency. Declared in the ``checks`` setting of the node that can
reach the target; the hub runs the same code for its own ``checks`` (hub/checks/).

A check never raises: whatever goes wrong (refused, timed out, bad certificate, wrong text)
is the result, ``ok: false`` with the error. The collector steps aside when no check is set.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import time
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

try:
    import ssl
except ImportError:  # an agent with no check configured runs without OpenSSL (agent/tls.py)
    ssl = None  # type: ignore[assignment]

from agent import wire
from agent.collectors import Collector

MAX_BODY = 1024 * 1024  # expected text is looked for in the first MiB


class Check(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    type: Literal["http", "tcp", "tls", "dns"]
    target: str  # http: a URL; tcp, tls: host:port; dns: a host name
    interval: float = 60.0
    timeout: float = 10.0
    expect_status: list[int] = []  # http: default any 2xx or 3xx
    expect_text: str | None = None  # http: must appear in the body
    verify: bool = True  # https, tls: the certificate must verify (chain and host name)
    expect_address: list[str] = []  # dns: each must be among the answers


def parse_checks(value: Any, where: str = "checks") -> list[Check]:
    """Settings value (a list of tables from TOML, or JSON text from the environment) to
    checks; raises ValueError naming the check and key that is wrong."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError as e:
            raise ValueError(f"{where}: not a JSON list of checks: {e}") from None
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of checks, got {type(value).__name__}")
    out: list[Check] = []
    for i, item in enumerate(value):
        try:
            c = msgspec.convert(item, Check)
        except msgspec.ValidationError as e:
            raise ValueError(f"{where}[{i}]: {e}".replace("at `$.", "at `")) from None
        err = _invalid(c)
        if err:
            raise ValueError(f"{where}[{i}] ({c.name!r}): {err}")
        if c.name in {o.name for o in out}:
            raise ValueError(f"{where}[{i}]: the name {c.name!r} is used twice")
        out.append(c)
    return out


def _invalid(c: Check) -> str | None:
    if not c.name or len(c.name) > 200:
        return "name must be 1-200 characters"
    if not (1 <= c.interval <= 86400) or not (0 < c.timeout <= 300):
        return "interval must be 1..86400 s and timeout 0..300 s"
    if c.type == "http":
        u = urlsplit(c.target)
        if u.scheme not in ("http", "https") or not u.hostname:
            return f"target {c.target!r} is not an http:// or https:// URL"
    elif c.type in ("tcp", "tls"):
        try:
            split_hostport(c.target)
        except ValueError as e:
            return str(e)
    elif not c.target or "/" in c.target or " " in c.target:
        return f"target {c.target!r} is not a host name"
    return None


def split_hostport(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"target {target!r} is not host:port")
    return host, int(port)


def _cert_fields(der: bytes | None, now: float) -> dict:
    if not der:
        return {}
    from cryptography import x509

    not_after = x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
    return {"cert_expires": not_after, "cert_days": round((not_after - now) / 86400, 3)}


def _peer_der(ssl_object) -> bytes | None:
    return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None


def _ctx(verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not verify:  # still read the certificate (its expiry); just do not trust or reject it
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _http(c: Check) -> dict:
    import aiohttp

    out: dict = {}
    ssl_arg: Any = None if c.target.startswith("http://") else _ctx(c.verify)
    u = urlsplit(c.target)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=c.timeout)) as s:
            async with s.get(c.target, ssl=ssl_arg, allow_redirects=True) as r:
                body = await r.content.read(MAX_BODY) if c.expect_text else b""
    except ssl.SSLCertVerificationError as e:  # aiohttp's certificate error is one
        return {**await _cert_of(u.hostname or "", u.port or 443), "error": _untrusted(e)}
    out["status"] = r.status
    want = c.expect_status or None
    if (want and r.status not in want) or (not want and not 200 <= r.status < 400):
        out["error"] = f"HTTP {r.status}" + (f", expected {want}" if want else "")
    elif c.expect_text and c.expect_text.encode() not in body:
        out["error"] = f"expected text {c.expect_text[:80]!r} not found"
    if ssl_arg is not None:  # aiohttp does not keep the peer certificate: one short handshake
        out.update(await _cert_of(u.hostname or "", u.port or 443))
    return out


def _untrusted(e: ssl.SSLCertVerificationError) -> str:
    inner = getattr(e, "certificate_error", e)  # aiohttp wraps ssl's error
    return f"certificate not trusted: {getattr(inner, 'verify_message', None) or inner}"


async def _cert_of(host: str, port: int) -> dict:
    _r, w = await asyncio.open_connection(host, port, ssl=_ctx(False), server_hostname=host)
    try:
        return _cert_fields(_peer_der(w.get_extra_info("ssl_object")), time.time())
    finally:
        w.close()


async def _tcp(c: Check) -> dict:
    host, port = split_hostport(c.target)
    _r, w = await asyncio.open_connection(host, port)
    w.close()
    return {}


async def _tls(c: Check) -> dict:
    host, port = split_hostport(c.target)
    try:
        _r, w = await asyncio.open_connection(host, port, ssl=_ctx(c.verify), server_hostname=host)
    except ssl.SSLCertVerificationError as e:
        # untrusted or wrong name: say so, and still tell when the certificate expires
        return {**await _cert_of(host, port), "error": _untrusted(e)}
    out = _cert_fields(_peer_der(w.get_extra_info("ssl_object")), time.time())
    w.close()
    if out.get("cert_days", 1) <= 0:
        out["error"] = "certificate expired " + dt.datetime.fromtimestamp(
            out["cert_expires"], dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return out


async def _dns(c: Check) -> dict:
    infos = await asyncio.get_running_loop().getaddrinfo(c.target, None, type=socket.SOCK_STREAM)
    found = sorted({str(i[4][0]) for i in infos})
    out: dict = {"detail": " ".join(found)[:4000]}
    missing = [a for a in c.expect_address if a not in found]
    if missing:
        out["error"] = f"expected {', '.join(missing)} among the answers"
    return out


RUNNERS: dict[str, Callable] = {"http": _http, "tcp": _tcp, "tls": _tls, "dns": _dns}


async def run_check(c: Check) -> wire.CheckResult:
    """Run one check once; never raises (bar cancellation)."""
    ts = time.time()
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(c.timeout):
            out = await RUNNERS[c.type](c)
    except TimeoutError:
        out = {"error": f"no answer within {c.timeout:g}s"}
    except ssl.SSLCertVerificationError as e:
        out = {"error": _untrusted(e)}
    except (OSError, ssl.SSLError, ValueError) as e:
        out = {"error": f"{type(e).__name__}: {e}"[:4000]}
    except Exception as e:  # noqa: BLE001 - aiohttp's client errors and the like: the result
        out = {"error": f"{type(e).__name__}: {e}"[:4000]}
    latency = round((time.perf_counter() - t0) * 1000, 3)
    return wire.CheckResult(ts=ts, name=c.name, type=c.type, target=c.target,
                            ok="error" not in out, latency_ms=latency, **out)


async def run_forever(checks: list[Check], emit: Callable[[wire.CheckResult], Any]) -> None:
    """Each check on its own interval, spread so they do not all start at once."""
    async def loop(c: Check, offset: float) -> None:
        await asyncio.sleep(offset)
        while True:
            started = time.monotonic()
            emit(await run_check(c))
            await asyncio.sleep(max(0.0, c.interval - (time.monotonic() - started)))

    n = len(checks)
    async with asyncio.TaskGroup() as tg:
        for i, c in enumerate(checks):
            tg.create_task(loop(c, min(c.interval, 5.0) * i / n))


class ChecksCollector(Collector):
    name = "checks"

    @classmethod
    def unavailable(cls, settings) -> str | None:
        return None if getattr(settings, "checks", None) else "no checks configured (setting checks)"

    def __init__(self, settings, emit, state):
        super().__init__(settings, emit, state)
        self.checks = parse_checks(settings.checks)

    async def run(self) -> None:
        await run_forever(self.checks, self.emit)
