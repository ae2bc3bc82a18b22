"""The commands collector and the shell hooks: a real Unix datagram socket, real util-linux
logger, and real interactive bash and zsh driven through a pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from agent import wire
from agent.collectors import commands as cmdmod
from agent.collectors.commands import CommandsCollector, parse_payload
from agent.config import AGENT_OPTS
from agent.settings import load
from agent.shellhook import snippet
from agent.state import State
from tests.conftest import async_wait_for

needs_logger = pytest.mark.skipif(not shutil.which("logger"), reason="util-linux logger is not installed")


@pytest.fixture
def sockdir():
    # Short (sun_path is 107 bytes) and reachable by other users (tmp_path's parents are 0700).
    d = tempfile.mkdtemp(prefix="hlc-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


class Harness:
    def __init__(self, tmp_path: Path, sock: Path):
        self.sock = sock
        self.settings = load(AGENT_OPTS, {"state_dir": tmp_path, "socket": str(sock)}, None, env={})
        self.state = State(tmp_path / "state.db")
        self.events: list = []
        self.col = CommandsCollector(self.settings, self._emit, self.state)
        self.task: asyncio.Task | None = None

    def _emit(self, e) -> bool:
        self.events.append(e)
        return True

    @property
    def commands(self) -> list[wire.Command]:
        return [e for e in self.events if isinstance(e, wire.Command)]

    async def start(self):
        self.task = asyncio.create_task(self.col.run())
        await async_wait_for(lambda: self.col.sock is not None, 5, what="socket bound")

    async def stop(self):
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.state.close()


@pytest.fixture
async def h(tmp_path, sockdir):
    h = Harness(tmp_path, sockdir / "c.sock")
    await h.start()
    yield h
    await h.stop()


def payload(code="0", dur="12", start="", tty="/dev/pts/9", shell="bash", cwd="/srv", command="ls -la") -> str:
    return "\x1f".join(["HLC1", code, dur, start, tty, shell, cwd, command])


def send_raw(sock: Path, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(data, str(sock))


# --- the collector --------------------------------------------------------------------


def test_parse_payload():
    assert parse_payload(b"<13>Nov 25 17:39:42 homelab-cmd: " + payload(start="1700000000250000").encode()) == (
        0, 12, 1700000000.25, "/dev/pts/9", "bash", "/srv", "ls -la")
    # the command is last: it may hold newlines, tabs, even the separator
    cmd = "for i in 1 2\ndo\techo $i\ndone # \x1f"
    assert parse_payload(payload(command=cmd).encode())[6] == cmd
    assert parse_payload(payload(code="", dur="").encode())[:3] == (None, None, None)
    for bad in [b"no marker", payload(code="x").encode(), payload(code="300").encode(),
                payload(start="soon").encode(), b"HLC1\x1f0\x1f1", payload(command="   ").encode()]:
        with pytest.raises(cmdmod.Payload):
            parse_payload(bad)


@needs_logger
async def test_logger_datagram_user_comes_from_the_kernel(h):
    r = subprocess.run(["logger", "-u", str(h.sock), "--socket-errors=on", "-t", "homelab-cmd", "--",
                        payload(code="3", dur="1500", command="make -j2 install")], timeout=10)
    assert r.returncode == 0
    await async_wait_for(lambda: h.commands, 5, what="command event")
    c = h.commands[0]
    me = __import__("pwd").getpwuid(os.getuid()).pw_name
    assert (c.command, c.cwd, c.user, c.tty, c.exit_code, c.duration_ms, c.shell, c.redacted) == (
        "make -j2 install", "/srv", me, "/dev/pts/9", 3, 1500, "bash", False)
    assert abs(c.ts - (time.time() - 1.5)) < 5  # ts is when the command started
    if os.geteuid() == 0:  # another user: the kernel says who, whatever the payload claims
        r = subprocess.run(["logger", "-u", str(h.sock), "-t", "homelab-cmd", "--",
                            payload(command="whoami # I am root, honest")],
                           preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)), timeout=10)
        assert r.returncode == 0
        await async_wait_for(lambda: len(h.commands) == 2, 5, what="nobody's command")
        assert h.commands[1].user == "nobody"


async def test_secrets_are_redacted_before_emitting(h):
    send_raw(h.sock, payload(command="export GITHUB_TOKEN=ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8").encode())
    send_raw(h.sock, payload(cwd="/srv/https:", command="curl -u admin:changeme http://router.lan/").encode())
    await async_wait_for(lambda: len(h.commands) == 2, 5, what="two commands")
    a, b = h.commands
    assert "ghp_" not in a.command and a.redacted and a.command.startswith("export GITHUB_TOKEN=")
    assert "changeme" not in b.command and b.redacted
    assert h.col.stats["redacted"] == 2


async def test_garbage_is_refused_and_counted(h):
    for junk in [b"", b"\xff\xfe" * 100, b"HLC1\x1fnope", os.urandom(2000), payload(code="-1").encode()]:
        send_raw(h.sock, junk)
    send_raw(h.sock, payload(command="uptime").encode())
    await async_wait_for(lambda: h.commands, 5, what="the good one")
    await asyncio.sleep(0.2)
    assert [c.command for c in h.commands] == ["uptime"]
    assert h.col.stats["rejected"] == 5


async def test_one_user_flooding_is_shed_and_counted(h):
    n = 600

    def flood():  # in a thread: the sender blocks whenever the socket's queue is full
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            for i in range(n):
                s.sendto(payload(command=f"echo {i}").encode(), str(h.sock))

    await asyncio.to_thread(flood)
    await async_wait_for(lambda: h.col.stats["received"] == n, 10, what="all datagrams read")
    emitted = len(h.commands)
    assert cmdmod.BURST <= emitted < n and h.col.stats["shed"] == n - emitted
    h.col._maybe_notice(force=True)
    notices = [e for e in h.events if isinstance(e, wire.Notice)]
    assert notices and f"shed {n - emitted} command reports" in notices[-1].message


async def test_socket_file_handling(tmp_path, sockdir):
    sock = sockdir / "c.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(sock))
    stale.close()  # a socket file left by a crashed agent
    h = Harness(tmp_path, sock)
    await h.start()
    assert (os.stat(sock).st_mode & 0o777) == 0o622
    await h.stop()
    assert not sock.exists()  # cleaned up on stop
    sock.write_text("not a socket")
    h2 = Harness(tmp_path, sock)
    with pytest.raises(ValueError, match="not a socket"):
        await h2.col.run()
    assert sock.read_text() == "not a socket"
    with pytest.raises(ValueError, match="longer than"):
        Harness(tmp_path, sockdir / ("x" * 120))


# --- real shells through a pseudo-terminal --------------------------------------------


PROMPT = "HLPROMPT> "


class Shell:
    """An interactive shell on a pty. ``run(line)`` types a line and waits for the next prompt."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child
            os.execvpe(argv[0], argv, env)
        self.status: int | None = None
        self.out = b""
        self.expect(PROMPT, 10)

    def read(self, timeout: float) -> None:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if r:
            try:
                self.out += os.read(self.fd, 65536)
            except OSError:
                pass

    def expect(self, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        start = len(self.out)
        while time.monotonic() < deadline:
            i = self.out.find(text.encode(), start)
            if i >= 0:
                seen = self.out[start:i].decode(errors="replace")
                self.out = self.out[i + len(text):]
                return seen
            self.read(0.05)
        raise AssertionError(f"no {text!r} within {timeout}s; output: {self.out[-2000:]!r}")

    def run(self, line: str, timeout: float = 10) -> str:
        os.write(self.fd, line.encode() + b"\r")
        return self.expect(PROMPT, timeout)

    def alive(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.fd, b"exit\r")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.alive():
            self.read(0.05)
        if self.alive():
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def hook_file(tmp_path: Path, shell: str, sock: Path) -> Path:
    """The hook as a user installs it: printed by the real CLI."""
    r = subprocess.run([sys.executable, "-m", "agent", "shell-hook", shell, "--socket", str(sock),
                        "--state-dir", str(tmp_path / "agent")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == snippet(shell, str(sock))
    f = tmp_path / f"hook.{shell}"
    f.write_text(r.stdout)
    return f


def shell_env(tmp_path: Path, **extra) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TERM": "dumb",
            "PS1": PROMPT, "PROMPT": PROMPT, "HISTFILE": str(home / ".history"), "LANG": "C.UTF-8",
            "PROMPT_EOL_MARK": "", **extra}


async def in_thread(fn, *args):
    return await asyncio.to_thread(fn, *args)


@needs_logger
async def test_bash_hook_reports_commands_through_a_real_pty(h, tmp_path):
    hook = hook_file(tmp_path, "bash", h.sock)
    work = tmp_path / "work dir"
    work.mkdir()

    def session():
        sh = Shell(["bash", "--norc", "--noprofile", "-i"], shell_env(tmp_path))
        try:
            sh.run(f". {hook}")
            sh.run(f"cd '{work}'")
            sh.run("false")
            sh.run("sleep 0.3; echo done | cat")
            sh.run("export API_TOKEN=supersecret123 && echo set")
            sh.run("(exit 42)")
            sh.run("")  # an empty line is not a command
            sh.run("tty")
        finally:
            sh.close()

    await in_thread(session)
    await async_wait_for(lambda: len(h.commands) >= 7, 10, what="seven commands")
    await asyncio.sleep(0.3)
    got = [(c.command, c.cwd, c.exit_code) for c in sorted(h.commands, key=lambda c: c.ts)]
    assert got == [
        (f". {hook}", os.getcwd(), 0),  # the line that installed the hook ran too
        (f"cd '{work}'", os.getcwd(), 0),
        ("false", str(work), 1),
        ("sleep 0.3; echo done | cat", str(work), 0),
        ("export API_TOKEN=[REDACTED] && echo set", str(work), 0),
        ("(exit 42)", str(work), 42),  # a subshell runs no DEBUG trap: found in history
        ("tty", str(work), 0),
    ]
    me = __import__("pwd").getpwuid(os.getuid()).pw_name
    assert all(c.user == me and c.shell == "bash" and c.tty and c.tty.startswith("/dev/pts/") for c in h.commands)
    by = {c.command: c for c in h.commands}
    assert by["sleep 0.3; echo done | cat"].duration_ms >= 300 and by["false"].duration_ms < 300
    assert by["export API_TOKEN=[REDACTED] && echo set"].redacted and not by["false"].redacted
    assert not any("supersecret123" in repr(e) for e in h.events)


@needs_logger
async def test_bash_hook_never_breaks_the_shell(h, tmp_path):
    hook = hook_file(tmp_path, "bash", h.sock)
    gone = tmp_path / "nowhere.sock"
    down_hook = tmp_path / "down.bash"
    down_hook.write_text(snippet("bash", str(gone)))

    def session():
        # a user with their own DEBUG trap and an array PROMPT_COMMAND, set -u, then set -e
        sh = Shell(["bash", "--norc", "--noprofile", "-i"], shell_env(tmp_path))
        outputs = {}
        try:
            sh.run("n=0; trap 'n=$((n+1))' DEBUG; PROMPT_COMMAND=('pc=yes')")
            sh.run(f". {hook}")
            sh.run(f". {hook}")  # twice: harmless
            sh.run("set -u")
            sh.run("sleep 2 &")
            outputs["bang"] = sh.run("echo bg=$!")
            outputs["jobs"] = sh.run("jobs")
            sh.run("set -e")
            sh.run("false && true")  # non-zero status, but not fatal under set -e
            outputs["status"] = sh.run('echo "status=$? pc=$pc"')
            outputs["trap"] = sh.run('[ "$n" -gt 5 ] && echo trap-still-runs')
            outputs["alive"] = sh.run("echo still-alive")
            assert sh.alive()
        finally:
            sh.close()
        # the agent is down: not a word from the hook
        sh = Shell(["bash", "--norc", "--noprofile", "-i"], shell_env(tmp_path))
        try:
            sh.run(f". {down_hook}")
            outputs["down"] = sh.run("echo quiet") + sh.run("true")
        finally:
            sh.close()
        return outputs

    out = await in_thread(session)
    assert "bg=" in out["bang"]
    assert "Running" in out["jobs"] and "sleep 2" in out["jobs"]  # the user's job, not ours
    assert "status=0 pc=yes" in out["status"] or "status=1 pc=yes" in out["status"]
    assert "trap-still-runs" in out["trap"]
    assert "still-alive" in out["alive"]
    assert "logger" not in out["down"] and "quiet" in out["down"] and "rror" not in out["down"]
    await async_wait_for(lambda: any(c.command == "echo still-alive" for c in h.commands), 10, what="last command")
    cmds = [c.command for c in h.commands]
    assert cmds.count("echo still-alive") == 1  # sourced twice, reported once
    bg = next(c for c in h.commands if c.command == "echo bg=$!")
    assert bg.exit_code == 0
    assert next(c for c in h.commands if c.command == "false && true").exit_code == 1


@needs_logger
@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed")
async def test_zsh_hook_reports_commands_through_a_real_pty(h, tmp_path):
    hook = hook_file(tmp_path, "zsh", h.sock)

    def session():
        sh = Shell(["zsh", "-f", "-i"], shell_env(tmp_path))
        try:
            sh.run(f". {hook}")
            sh.run("cd /tmp")
            sh.run("sleep 0.2")
            sh.run("mysql -u root -pS3cret -e 'select 1' 2>/dev/null")
            sh.run("setopt nounset errexit")
            sh.run("false || true")
            out = sh.run("echo zsh-alive")
            assert sh.alive()
            return out
        finally:
            sh.close()

    out = await in_thread(session)
    assert "zsh-alive" in out
    await async_wait_for(lambda: len(h.commands) >= 6, 10, what="zsh commands")
    got = {c.command: c for c in h.commands}
    assert got["cd /tmp"].cwd != "/tmp" and got["sleep 0.2"].cwd == "/tmp"
    assert got["sleep 0.2"].duration_ms >= 200 and got["sleep 0.2"].shell == "zsh"
    mysql = next(c for c in h.commands if c.command.startswith("mysql"))
    assert "S3cret" not in mysql.command and mysql.redacted and mysql.exit_code == 127
    assert got["echo zsh-alive"].exit_code == 0
