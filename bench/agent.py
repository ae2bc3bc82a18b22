"""python -m bench agent [--seconds 60] [--files 1000]

`homelab-agent run` with the default collectors, watching a 1,000-file tree (one file
changed every 10 s), shipping to a real hub. Measured over the window after a warm-up:
RSS (peak and mean, the agent and any children it runs) and CPU as % of one core
(including finished children). Baseline in the same run: Debian's prometheus-node-exporter
scraped every 10 s, measured the same way; ratio = agent / node_exporter.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from bench.common import Hub, free_port


def tree_usage(p: psutil.Process) -> tuple[float, float]:
    """(cpu seconds incl. reaped children, rss MB of the live tree)."""
    try:
        t = p.cpu_times()
        cpu = t.user + t.system + t.children_user + t.children_system
        rss = p.memory_info().rss
        for c in p.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                ct = c.cpu_times()
                cpu += ct.user + ct.system
                rss += c.memory_info().rss
        return cpu, rss / 2**20
    except psutil.Error:
        return 0.0, 0.0


def measure(procs: dict[str, psutil.Process], seconds: float, tick=None) -> dict:
    start = {k: tree_usage(p)[0] for k, p in procs.items()}
    rss: dict[str, list[float]] = {k: [] for k in procs}
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < seconds:
        time.sleep(1)
        n += 1
        for k, p in procs.items():
            rss[k].append(tree_usage(p)[1])
        if tick:
            tick(n)
    wall = time.monotonic() - t0
    out = {}
    for k, p in procs.items():
        cpu = tree_usage(p)[0] - start[k]
        out[k] = {"cpu_percent": 100 * cpu / wall, "rss_mb_peak": max(rss[k]), "rss_mb_mean": sum(rss[k]) / len(rss[k])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench agent")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--warmup", type=float, default=15)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    hub = Hub(work / "hub").start()
    agent = exporter = None
    try:
        tree = work / "tree"
        for i in range(a.files):
            d = tree / f"d{i % 20}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i}.conf").write_text(f"key{i} = {i}\n" * 5)
        state = work / "agent"
        token = subprocess.run([sys.executable, "-m", "hub", "enroll", "bench", "--data-dir", str(hub.data_dir)],
                               capture_output=True, text=True, check=True).stdout.split()[-1]
        subprocess.run([sys.executable, "-m", "agent", "join", hub.url, token, "--state-dir", str(state)],
                       check=True, capture_output=True)
        log = open(work / "agent.log", "ab")  # noqa: SIM115
        agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--state-dir", str(state), "--watch", str(tree)],
                                 stdout=log, stderr=subprocess.STDOUT)
        procs = {"agent": psutil.Process(agent.pid)}
        exe = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
        port = free_port()
        if exe:
            exporter = subprocess.Popen([exe, f"--web.listen-address=127.0.0.1:{port}"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs["node_exporter"] = psutil.Process(exporter.pid)
        time.sleep(a.warmup)

        def tick(n: int) -> None:
            if n % 10 == 0:
                (tree / "d0" / "f0.conf").write_text(f"changed = {n}\n")
                if exporter:  # what Prometheus would do at a 10 s scrape interval
                    threading.Thread(target=lambda: urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/metrics", timeout=5).read(), daemon=True).start()

        res = measure(procs, a.seconds, tick)
        alive = agent.poll() is None
    finally:
        for p in (agent, exporter):
            if p and p.poll() is None:
                p.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(20)
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)
    ag = res["agent"]
    out = {"bench": "agent", "seconds": a.seconds, "files": a.files, "agent_alive": alive,
           "rss_mb": round(ag["rss_mb_peak"], 1), "rss_mb_mean": round(ag["rss_mb_mean"], 1),
           "cpu_percent": round(ag["cpu_percent"], 3)}
    if "node_exporter" in res:
        ne = res["node_exporter"]
        out["baseline"] = {"name": "prometheus-node-exporter @10s scrape", "rss_mb": round(ne["rss_mb_peak"], 1),
                           "cpu_percent": round(ne["cpu_percent"], 3)}
        out["rss_ratio"] = round(ag["rss_mb_peak"] / ne["rss_mb_peak"], 2)
        out["cpu_ratio"] = round(ag["cpu_percent"] / ne["cpu_percent"], 2) if ne["cpu_percent"] else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
