"""Helpers shared by the benchmarks: a hub subprocess, enrolment, realistic event mixes."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from agent import wire


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    """`homelab-hub serve` as a child process on a loopback port."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Hub:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "hub.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "serve", "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("hub did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
            if self.proc.poll() is None:
                self.proc.kill()

    def enroll_and_join(self, name: str) -> str:
        out = subprocess.run([sys.executable, "-m", "hub", "enroll", name, "--data-dir", str(self.data_dir)],
                             capture_output=True, text=True, check=True).stdout.split()[-1]
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request("POST", "/v1/join", json.dumps({"token": out}), {"Content-Type": "application/json"})
        r = c.getresponse()
        body = json.loads(r.read())
        c.close()
        return body["credential"]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def event_mix(rng: random.Random, i: int, ts: float) -> wire.Event:
    """A day on a busy node: mostly logs, some commands, file changes and metrics."""
    r = rng.random()
    if r < 0.70:
        return wire.Log(ts=ts, source="/var/log/syslog", program=rng.choice(["sshd", "cron", "kernel", "nginx", "systemd"]),
                        pid=rng.randint(100, 40000), severity=rng.choice([3, 4, 6, 6, 6, 7]),
                        message=f"request {i} from 10.0.{i % 250}.{i % 199} took {rng.randint(1, 900)}ms status={rng.choice([200, 200, 404, 500])}")
    if r < 0.85:
        return wire.Command(ts=ts, command=f"ls -la /srv/data/{i % 97}", cwd="/root", user="root", tty="pts/0",
                            exit_code=0, duration_ms=rng.randint(1, 50), shell="bash")
    if r < 0.95:
        return wire.FileChange(ts=ts, action="modify", path=f"/etc/app/conf{i % 50}.ini", size=120 + i % 40,
                               mode=0o644, uid=0, gid=0, sha256=f"{i:064x}", old_sha256=f"{i - 1:064x}",
                               content_changed=True, diff=f"@@ -1 +1 @@\n-x={i - 1}\n+x={i}\n")
    return wire.Metrics(ts=ts, samples={"cpu_percent": rng.random() * 100, "load1": rng.random() * 4,
                                        "memory_used_ratio": rng.random(), 'disk_used_ratio{mount="/"}': 0.5})
