"""python -m bench shellhook [COMMANDS]: what the shell hook costs per command, as a person
at the prompt feels it: the time from pressing Enter on ``:`` to the next prompt, in a real
interactive bash (and zsh, when installed) on a pseudo-terminal.

Each shell runs the same COMMANDS (default 300) three ways: without the hook (baseline), with
the hook and a live receiver on the socket (every report is really sent and read), and with
the hook and nothing listening (the agent is down). Reported per command: milliseconds,
overhead against the baseline, and the ratio. The last line is one JSON object.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from agent.shellhook import snippet

PROMPT = b"BENCH> "


def _drain(fd: int, until: bytes, timeout: float = 30) -> None:
    buf, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            buf += os.read(fd, 65536)
            if until in buf:
                return
    raise RuntimeError(f"no {until!r} within {timeout}s")


def per_command_ms(shell: str, hook: Path | None, n: int, home: Path) -> float:
    argv = ["bash", "--norc", "--noprofile", "-i"] if shell == "bash" else ["zsh", "-f", "-i"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TERM": "dumb",
           "PS1": PROMPT.decode(), "PROMPT": PROMPT.decode(), "HISTFILE": str(home / f".hist-{shell}"),
           "PROMPT_EOL_MARK": ""}
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(argv[0], argv, env)
    try:
        _drain(fd, PROMPT)
        if hook:
            os.write(fd, f". {hook}\r".encode())
            _drain(fd, PROMPT)
        for i in range(10):  # warm up
            os.write(fd, f": {i}\r".encode())
            _drain(fd, PROMPT)
        t0 = time.perf_counter()
        for i in range(n):
            os.write(fd, f": {i}\r".encode())
            _drain(fd, PROMPT)
        return (time.perf_counter() - t0) / n * 1000
    finally:
        os.write(fd, b"exit\r")
        time.sleep(0.1)
        with_kill = True
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            with_kill = done == 0
        except ChildProcessError:
            with_kill = False
        if with_kill:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    tmp = Path(tempfile.mkdtemp(prefix="hlb-", dir="/tmp"))
    received = [0]
    sock_path = tmp / "c.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    stop = threading.Event()

    def receive():
        while not stop.is_set():
            try:
                sock.recv(70000)
                received[0] += 1
            except TimeoutError:
                pass

    threading.Thread(target=receive, daemon=True).start()
    out: dict = {"commands": n}
    try:
        for shell in ("bash", "zsh"):
            if not shutil.which(shell):
                continue
            live, down = tmp / f"live.{shell}", tmp / f"down.{shell}"
            live.write_text(snippet(shell, str(sock_path)))
            down.write_text(snippet(shell, str(tmp / "nobody-listens.sock")))
            before = received[0]
            base = per_command_ms(shell, None, n, tmp)
            hooked = per_command_ms(shell, live, n, tmp)
            time.sleep(0.5)
            sent = received[0] - before
            agent_down = per_command_ms(shell, down, n, tmp)
            out[shell] = {
                "baseline_ms": round(base, 3), "hooked_ms": round(hooked, 3),
                "overhead_ms": round(hooked - base, 3), "ratio": round(hooked / base, 2),
                "agent_down_ms": round(agent_down, 3), "reports_received": sent,
            }
            print(f"{shell}: {base:.2f} ms/command bare, {hooked:.2f} with the hook "
                  f"(+{hooked - base:.2f} ms), {agent_down:.2f} with the agent down; "
                  f"{sent} reports received", file=sys.stderr)
    finally:
        stop.set()
        sock.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
