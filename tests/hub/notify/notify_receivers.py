"""Real local receivers for notifications: an HTTP server speaking ntfy's documented publish API
(https://docs.ntfy.sh/publish/: JSON to ``/`` or a body to ``/<topic>``), and aiosmtpd for email."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web


class Ntfy:
    """``fail`` makes the next N publishes answer 503; ``delay`` holds each answer (seconds)."""

    def __init__(self):
        self.messages: list[dict] = []
        self.attempts = 0
        self.fail = 0
        self.delay = 0.0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _publish(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.fail > 0:
            self.fail -= 1
            return web.json_response({"code": 50301, "http": 503, "error": "restarting"}, status=503)
        raw = await request.read()
        topic = request.match_info.get("topic")
        if topic is None:  # JSON publishing
            try:
                msg = json.loads(raw)
            except ValueError:
                return web.json_response({"code": 40001, "http": 400, "error": "invalid JSON"}, status=400)
            if not isinstance(msg, dict) or not msg.get("topic"):
                return web.json_response({"code": 40009, "http": 400, "error": "topic missing"}, status=400)
        else:
            h = request.headers
            msg = {"topic": topic, "message": raw.decode(),
                    "title": h.get("X-Title") or h.get("Title") or h.get("t"),
                    "priority": h.get("X-Priority") or h.get("Priority"),
                    "tags": (h.get("X-Tags") or h.get("Tags") or "").split(",")}
        if self.delay:
            await asyncio.sleep(self.delay)
        out = {"id": f"m{len(self.messages) + 1}", "time": int(time.time()), "event": "message",
               "topic": msg["topic"], "message": msg.get("message", ""), "title": msg.get("title")}
        self.messages.append(out)
        return web.json_response(out)

    async def start(self, port: int = 0) -> Ntfy:
        app = web.Application()
        app.router.add_post("/", self._publish)
        app.router.add_put("/{topic}", self._publish)
        app.router.add_post("/{topic}", self._publish)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    def url(self, topic: str = "homelab") -> str:
        return f"ntfy://127.0.0.1:{self.port}/{topic}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class Mailbox:
    """aiosmtpd on loopback; ``mails`` holds the raw messages received."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.mails: list[str] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                outer.mails.append(envelope.content.decode(errors="replace"))
                return "250 OK"

        from tests.conftest import free_port

        self.port = free_port()  # aiosmtpd's readiness probe cannot follow a port 0
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> Mailbox:
        self.controller.start()
        return self

    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=hub@homelab.test&to=me@homelab.test"

    def stop(self) -> None:
        self.controller.stop()
