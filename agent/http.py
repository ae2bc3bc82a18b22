"""A small HTTP/1.1 client on asyncio streams, for the agent's few requests to its hub.

Why not aiohttp here: importing its client (plus the TLS context it builds at import) costs
about 13 MB of resident memory, a third of the agent's budget, for features the agent never
uses. This client does what the agent needs and no more: one keep-alive connection per
client, Content-Length request bodies, Content-Length / chunked / until-close responses,
TLS only when the URL is https (with the context the caller gives, e.g. a pinned hub cert),
timeouts on connect and on the whole exchange, bounded response sizes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


class HTTPClientError(OSError):
    """Connection, protocol or timeout failure (never an HTTP status: those are Responses)."""


class Response:
    __slots__ = ("status", "reason", "headers", "body")

    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return {"error": self.body[:200].decode("utf-8", "replace") or self.reason}


class HubClient:
    def __init__(self, base_url: str, headers: dict[str, str] | None = None, *, ssl=None,
                 timeout: float = 60.0, connect_timeout: float = 10.0):
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"hub URL must be http:// or https://HOST[:PORT], got {base_url!r}")
        self.host, self.https = u.hostname, u.scheme == "https"
        self.port = u.port or (443 if self.https else 80)
        self.prefix = u.path.rstrip("/")
        self.headers = {"Host": f"{self.host}:{self.port}", **(headers or {})}
        self.ssl = ssl
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def close(self) -> None:
        if self._conn:
            _, w = self._conn
            self._conn = None
            w.close()
            try:
                await w.wait_closed()
            except (OSError, asyncio.CancelledError):
                pass

    async def _connect(self):
        ctx = None
        if self.https:
            ctx = self.ssl
            if ctx is None:
                import ssl  # loaded only for https hubs

                ctx = ssl.create_default_context()
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=ctx, limit=MAX_HEADER_BYTES),
                self.connect_timeout)
        except TimeoutError:
            raise HTTPClientError(f"connect to {self.host}:{self.port} timed out") from None
        except OSError as e:
            raise HTTPClientError(f"cannot connect to {self.host}:{self.port}: {e.strerror or e}") from None

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None, timeout: float | None = None) -> Response:
        """One request; a stale keep-alive connection is replaced once, transparently."""
        for attempt in (0, 1):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = await self._connect()
            try:
                return await asyncio.wait_for(self._exchange(method, path, body, headers),
                                              timeout or self.timeout)
            except _Stale:
                await self.close()
                if not reused or attempt:
                    raise HTTPClientError("connection closed by the hub") from None
            except TimeoutError:
                await self.close()
                raise HTTPClientError(f"{method} {path}: no answer within {timeout or self.timeout:.0f}s") from None
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                await self.close()
                if isinstance(e, HTTPClientError):
                    raise
                raise HTTPClientError(f"{method} {path}: {e}") from None
        raise AssertionError("unreachable")

    async def _exchange(self, method, path, body, headers) -> Response:
        assert self._conn is not None
        reader, writer = self._conn
        h = {**self.headers, **(headers or {})}
        if body is not None:
            h["Content-Length"] = str(len(body))
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        try:
            writer.write(head.encode("latin-1"))
            if body:
                writer.write(body)
            await writer.drain()
            line = await reader.readline()
        except (ConnectionResetError, BrokenPipeError):
            raise _Stale() from None
        if not line:
            raise _Stale()
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP response: {line[:80]!r}")
        status, reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
        resp_headers: dict[str, str] = {}
        size = 0
        while True:
            hl = await reader.readline()
            size += len(hl)
            if size > MAX_HEADER_BYTES:
                raise ValueError("response headers too large")
            if hl in (b"\r\n", b"\n", b""):
                break
            k, _, v = hl.decode("latin-1").partition(":")
            resp_headers[k.strip().lower()] = v.strip()
        data = await self._body(reader, resp_headers, method)
        if resp_headers.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, reason, resp_headers, data)

    async def _body(self, reader: asyncio.StreamReader, headers: dict[str, str], method: str) -> bytes:
        if method == "HEAD":
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                n = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += n
                if total > MAX_BODY_BYTES:
                    raise ValueError("response body too large")
                chunks.append(await reader.readexactly(n))
                await reader.readexactly(2)
        if "content-length" in headers:
            n = int(headers["content-length"])
            if n > MAX_BODY_BYTES:
                raise ValueError("response body too large")
            return await reader.readexactly(n)
        chunks, total = [], 0  # no length: the body runs until the server closes
        while chunk := await reader.read(65536):
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                raise ValueError("response body too large")
            chunks.append(chunk)
        await self.close()
        return b"".join(chunks)


class _Stale(Exception):
    """The kept-alive connection was closed by the peer before it answered."""
