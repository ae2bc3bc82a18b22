"""Shell commands, reported by the bash/zsh hook (``homelab-agent shell-hook``) over a Unix
datagram socket (``settings.socket``, default ``STATE_DIR/commands.sock``).

Who ran a command is not taken from the datagram: the socket has SO_PASSCRED set, so every
datagram carries SCM_CREDENTIALS filled in by the kernel, and the user is the sender's real
uid (only root can claim another). Secrets are redacted here, on the node, before the
``command`` event is queued, so an unredacted command line never reaches the spool or the hub.

The socket is writable by every local user (mode 0622) so everyone's shell can report; its
directory must be reachable too (the default state directory is 0700: point ``socket`` at
e.g. /run/homelab-agent/commands.sock to record other users). Each uid gets a token bucket
(RATE per second, BURST at once) so one user's loop cannot crowd out the rest; what is over
it is shed and counted in a notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
import time
from pathlib import Path

from agent import wire
from agent.collectors import Collector
from agent.redact import redact
from agent.shellhook import MAGIC, SEP
from agent.users import user_name

log = logging.getLogger(__name__)

MAX_DATAGRAM = 300 * 1024
MAX_COMMAND = 64 * 1024  # longer command lines are cut (the hook sends at most ~64 KiB anyway)
MAX_FIELD = 4096
RATE, BURST = 20.0, 200.0
READS_PER_WAKEUP = 256  # then yield to the loop, so a flood cannot starve other collectors
NOTICE_EVERY = 60.0
START_SLACK = 300.0
_CREDS = struct.Struct("iII")  # struct ucred: pid, uid, gid
_MARK = (MAGIC + SEP).encode()


def socket_path(settings) -> Path:
    return Path(settings.socket) if settings.socket else Path(settings.state_dir) / "commands.sock"


class Payload(ValueError):
    pass


def parse_payload(data: bytes) -> tuple[int | None, int | None, float | None, str, str, str, str]:
    """(exit_code, duration_ms, start, tty, shell, cwd, command) from a hook datagram.
    logger puts a syslog header before it; everything from the marker on is ours."""
    i = data.find(_MARK)
    if i < 0:
        raise Payload("no HLC1 marker")
    parts = data[i + len(_MARK):].decode("utf-8", "replace").split(SEP, 6)
    if len(parts) != 7:
        raise Payload(f"expected 7 fields, got {len(parts)}")
    code_s, dur_s, start_s, tty, shell, cwd, command = parts
    try:
        code = int(code_s) if code_s else None
        dur = int(dur_s) if dur_s else None
        start = int(start_s) / 1e6 if start_s else None
    except ValueError:
        raise Payload("exit code, duration and start must be integers") from None
    if code is not None and not 0 <= code <= 255:
        raise Payload(f"exit code {code} out of range")
    if dur is not None and not 0 <= dur < 10 * 365 * 86400 * 1000:
        dur = None  # a clock step during the command: unknown rather than negative
    command = command.rstrip("\n")
    if not command.strip():
        raise Payload("empty command")
    return code, dur, start, tty[:MAX_FIELD], shell[:64], cwd[:MAX_FIELD], command[:MAX_COMMAND]


class _Bucket:
    __slots__ = ("tokens", "at", "shed")

    def __init__(self, now: float):
        self.tokens, self.at, self.shed = BURST, now, 0

    def take(self, now: float) -> bool:
        self.tokens = min(BURST, self.tokens + (now - self.at) * RATE)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.shed += 1
        return False


class CommandsCollector(Collector):
    name = "commands"

    def __init__(self, settings, emit, state):
        super().__init__(settings, emit, state)
        self.path = socket_path(settings)
        if len(os.fsencode(self.path)) >= 108:
            raise ValueError(f"socket path {self.path} is longer than a Unix socket allows (107 bytes)")
        self.sock: socket.socket | None = None
        self.buckets: dict[int, _Bucket] = {}
        self.stats = {"received": 0, "emitted": 0, "rejected": 0, "shed": 0, "redacted": 0}
        self._last_notice = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def unavailable(cls, settings) -> str | None:
        if not hasattr(socket, "SO_PASSCRED") or not hasattr(socket, "AF_UNIX"):
            return "this platform has no Unix sockets with SO_PASSCRED"
        return None

    def _bind(self) -> socket.socket:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            # A stale socket from an earlier run goes; anything else there is not ours to delete.
            if not stat.S_ISSOCK(st.st_mode):
                raise ValueError(f"{self.path} exists and is not a socket")
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
            sock.bind(str(self.path))
            os.chmod(self.path, 0o622)  # any local user may send; only the agent reads
        except OSError:
            sock.close()
            raise
        return sock

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.sock = self._bind()
        log.info("commands: listening on %s", self.path)
        self._loop.add_reader(self.sock.fileno(), self._readable)
        try:
            while True:  # until cancelled; wakes only to report shedding
                await asyncio.sleep(NOTICE_EVERY)
                self._maybe_notice()
        finally:
            self._maybe_notice(force=True)
            self.close()

    def close(self) -> None:
        if self.sock is None:
            return
        with contextlib.suppress(Exception):
            if self._loop is not None:
                self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.sock = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _readable(self) -> None:
        assert self.sock is not None
        for _ in range(READS_PER_WAKEUP):
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(_CREDS.size))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.warning("commands: receive failed: %s", e)
                break
            self.handle(data, anc)
        self._maybe_notice()

    def handle(self, data: bytes, anc: list) -> None:
        self.stats["received"] += 1
        uid = pid = None
        for level, kind, blob in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(blob) >= _CREDS.size:
                pid, uid, _gid = _CREDS.unpack(blob[:_CREDS.size])
        if uid is None:  # cannot happen with SO_PASSCRED set; refuse rather than guess
            self.stats["rejected"] += 1
            return
        now = time.monotonic()
        bucket = self.buckets.get(uid)
        if bucket is None:
            bucket = self.buckets[uid] = _Bucket(now)
        if not bucket.take(now):
            self.stats["shed"] += 1
            return
        try:
            code, dur, start, tty, shell, cwd, command = parse_payload(data)
        except Payload as e:
            self.stats["rejected"] += 1
            log.debug("commands: datagram from uid %s pid %s refused: %s", uid, pid, e)
            return
        command, changed = redact(command)
        cwd, cwd_changed = redact(cwd)
        if changed or cwd_changed:
            self.stats["redacted"] += 1
        # The shell's own start time orders commands that ran in quick succession (their
        # reports race each other); one far from what the kernel-side clock says is ignored.
        ts = time.time() - (dur or 0) / 1000
        if start is not None and abs(start - ts) < START_SLACK:
            ts = start
        event = wire.Command(
            ts=ts, command=command, cwd=cwd or None, user=user_name(uid),
            tty=tty or None, exit_code=code, duration_ms=dur, shell=shell or None,
            redacted=changed or cwd_changed,
        )
        if self.emit(event):
            self.stats["emitted"] += 1


    def _maybe_notice(self, force: bool = False) -> None:
        now = time.monotonic()
        if now - self._last_notice < NOTICE_EVERY and not force:
            return
        self._last_notice = now
        over = {uid: b.shed for uid, b in self.buckets.items() if b.shed}
        if over:
            total = sum(over.values())
            who = ", ".join(f"{user_name(u)}: {n}" for u, n in sorted(over.items()))
            self.emit(wire.Notice(ts=time.time(), source=self.name, level="warning",
                                  message=f"shed {total} command reports over {RATE:g}/s per user ({who})"[:4000]))
            for b in self.buckets.values():
                b.shed = 0
