"""Running the hub: `serve` (the hub alone) and `up` (hub + local agent + Datasette)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

from agent import aio
from agent.settings import Settings
from hub import auth, paths
from hub.app import create_app
from hub.config import db_path
from hub.errors import BadRequest, Conflict
from hub.store import open_db, private_dir

log = logging.getLogger(__name__)


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise BadRequest(f"--listen must be host:port, got {listen!r}")
    return host.strip("[]"), int(port)


def default_listen() -> str:
    from hub import tailnet
    addr = tailnet.local_address()
    return f"{addr}:8470" if addr else "127.0.0.1:8470"


def listen_of(settings: Settings) -> str:
    return settings.listen or default_listen()


def public_url(settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host, port = parse_listen(listen_of(settings))
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    scheme = "https" if settings.tls else "http"
    return f"{scheme}://{host}:{port}"


def ensure_db(settings: Settings) -> Path:
    path = db_path(settings.data_dir)
    open_db(path).close()
    return path


def datasette_argv(settings: Settings, port: int) -> list[str]:
    d = paths.shipped("datasette")
    argv = [sys.executable, "-m", "datasette", "serve", str(db_path(settings.data_dir)),
            "--host", "127.0.0.1", "--port", str(port),
            "--setting", "sql_time_limit_ms", "5000", "--setting", "max_returned_rows", "5000",
            # suggesting facets runs a GROUP BY per column on every table page: seconds on events
            "--setting", "suggest_facets", "off"]
    if (d / "metadata.yml").exists():
        argv += ["--metadata", str(d / "metadata.yml")]
    if (d / "plugins").is_dir():
        argv += ["--plugins-dir", str(d / "plugins")]
    if (d / "templates").is_dir():
        argv += ["--template-dir", str(d / "templates")]
    return argv


def _why_not(e: OSError) -> str:
    return {errno.EADDRINUSE: "the port is in use (another hub, or another program)",
            errno.EADDRNOTAVAIL: "that address is not on this machine",
            errno.EACCES: "permission denied (ports below 1024 need privileges)"}.get(
        e.errno or 0, e.strerror or str(e))  # no errno (None) is none of them


def check_port(host: str, port: int) -> None:
    """Bind and release before anything starts, so a clash is one line, not a started hub
    tearing itself down. (The real bind below still reports a race the same way.)"""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise BadRequest(f"cannot listen on {host}:{port}: {e.strerror}") from None
    for family, kind, proto, _c, addr in infos[:1]:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
            try:
                s.bind(addr)
            except OSError as e:
                raise BadRequest(f"cannot listen on {host}:{port}: {_why_not(e)}") from None


async def _start_site(app: web.Application, listen: str) -> web.AppRunner:
    host, port = parse_listen(listen)
    if port:
        check_port(host, port)
    # keepalive_timeout also runs from the moment a connection opens, and closes one that is
    # waiting for a request (idle, or headers half sent): no holding connections open for free
    from hub.keys import SETTINGS

    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           keepalive_timeout=app[SETTINGS].read_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=_ssl(app))
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise BadRequest(f"cannot listen on {listen}: {_why_not(e)}") from None
    return runner


def _ssl(app: web.Application):
    from hub.keys import SETTINGS

    s = app[SETTINGS]
    if not s.tls:
        return None
    from hub import tls

    return tls.server_context(s.data_dir)


def refuse_if_in_use(data_dir: Path) -> None:
    """One line instead of two hubs fighting over one database: a serving hub holds an
    exclusive flock on DATA_DIR/hub.lock (hub/backup/web.py). Probing it (lock, then release)
    leaves the lock to the app, which takes it for as long as it serves."""
    from hub.backup import lock_holder

    who = lock_holder(data_dir)
    if who:
        raise Conflict(f"{data_dir} is in use by another hub ({who}); stop it first, or pass "
                       f"another --data-dir")


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def serve(settings: Settings) -> None:
    refuse_if_in_use(settings.data_dir)

    async def main():
        listen = listen_of(settings)
        runner = await _start_site(create_app(settings), listen)
        log.info("hub serving on %s, data in %s", listen, settings.data_dir)
        print(f"hub: {public_url(settings)}  database: {db_path(settings.data_dir)}", flush=True)
        await _stop_event().wait()
        await runner.cleanup()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_node_name() -> str:
    name = socket.gethostname().split(".")[0] or "localhost"
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:63].lstrip("-_.")
    return cleaned or "localhost"


def up(settings: Settings, watch: list[str], datasette: bool = True, duration: float | None = None) -> None:
    """Hub in this process; the local agent and Datasette as children that die with us."""
    refuse_if_in_use(settings.data_dir)

    async def main():
        private_dir(settings.data_dir)
        listen = listen_of(settings)
        app = create_app(settings)
        runner = await _start_site(app, listen)
        url = public_url(settings)
        agent_dir = settings.data_dir / "agent"
        agent_cmd = [sys.executable, "-m", "agent", "run", "--state-dir", str(agent_dir)]
        for w in watch:
            agent_cmd += ["--watch", w]
        if not (agent_dir / "credential").exists():
            await _join_local_agent(settings, url, agent_dir)
        children: list[tuple[str, subprocess.Popen]] = []
        logs = settings.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        children.append(("agent", _spawn(agent_cmd, logs / "agent.log")))
        ds_url = None
        if datasette:
            port = settings.datasette_port or _free_port()
            settings.datasette_port = port  # the dashboard links to it
            children.append(("datasette", _spawn(datasette_argv(settings, port), logs / "datasette.log",
                                                 {"HOMELAB_HUB_URL": url})))
            ds_url = f"http://127.0.0.1:{port}/"
        print(f"hub        {url}", flush=True)
        print(f"datasette  {ds_url or '(off)'}", flush=True)
        print(f"database   {db_path(settings.data_dir)}", flush=True)
        print(f"agent      node {local_node_name()!r}, state in {agent_dir}, log in {logs / 'agent.log'}", flush=True)
        print("try: homelab-hub nodes --data-dir " + str(settings.data_dir) + "    (Ctrl-C stops everything)", flush=True)
        stop = _stop_event()
        deadline = time.monotonic() + duration if duration else None
        while not stop.is_set():
            for name, p in children:
                if p.poll() is not None:
                    log.error("%s exited with %s; see %s", name, p.returncode, logs / f"{name}.log")
                    stop.set()
            if deadline and time.monotonic() > deadline:
                break
            await aio.wait(stop, 1.0)
        for _name, p in children:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _name, p in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=15)
            if p.poll() is None:
                p.kill()
        await runner.cleanup()

    asyncio.run(main())


async def _join_local_agent(settings: Settings, url: str, agent_dir: Path) -> None:
    from agent.join import join_and_save

    name = local_node_name()
    db = open_db(db_path(settings.data_dir))
    db.execute("BEGIN IMMEDIATE")
    token = auth.enroll(db, name, 300)
    db.execute("COMMIT")
    db.close()
    fingerprint = None
    if settings.tls:  # pin our own certificate, as a remote node would
        from hub import tls

        fingerprint = tls.fingerprint(settings.data_dir)
    await join_and_save(url, token, agent_dir, fingerprint)


def _spawn(argv: list[str], log_path: Path, extra_env: dict | None = None) -> subprocess.Popen:
    out = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    env = {**os.environ, **(extra_env or {})}
    env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    finally:
        out.close()

