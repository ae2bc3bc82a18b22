"""python -m bench agent [--seconds 60] [--files 1000]

`homelab-agent run` with the default collectors, watching a 1,000-file tree (one file
changed every 10 s), shipping to a real hub. Measured over the window after a warm-up:
RSS (peak and mean, the agent and any children it runs) and CPU as % of one core
(including finished children). Baseline in the same run: Debian's prometheus-node-exporter
scraped every 10 s, measured the same way; ratio = agent / node_exporter.

--systemd (as root): the same comparison on a booted Debian node of the node lab
(tests/lab/nodelab.py, docs/lab.md): the agent installed by the hub's one-liner and running
under its hardened unit with every collector on (journald included), against the
prometheus-node-exporter unit in the same node; a file under /etc changes and the exporter is
scraped every 10 s. Each side is its unit's processes, read from the node's cgroup on the host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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


def run_seconds(p: psutil.Process) -> float:
    """CPU seconds of a live process. From the scheduler's nanosecond count of each thread
    (/proc/PID/task/TID/sched) where the kernel has it: both processes here use well under a
    tenth of a percent of a core, a few 10 ms clock ticks in a minute, so the tick count of
    cpu_times() alone made the CPU ratio a ratio of small integers. Falls back to the ticks."""
    try:
        total = 0.0
        for tid in os.listdir(f"/proc/{p.pid}/task"):
            with open(f"/proc/{p.pid}/task/{tid}/sched") as f:
                total += next(float(line.split(":")[1]) for line in f if line.startswith("se.sum_exec_runtime")) / 1000
        return total
    except (OSError, StopIteration, ValueError):
        t = p.cpu_times()
        return t.user + t.system


def tree_usage(p: psutil.Process) -> tuple[float, float]:
    """(cpu seconds incl. reaped children, rss MB of the live tree)."""
    try:
        t = p.cpu_times()
        cpu = run_seconds(p) + t.children_user + t.children_system  # reaped children: ticks only
        rss = p.memory_info().rss
        for c in p.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cpu += run_seconds(c)
                rss += c.memory_info().rss
        return cpu, rss / 2**20
    except psutil.Error:
        return 0.0, 0.0


def tree_shares(p: psutil.Process) -> tuple[float, float]:
    """(PSS, USS) in MB of the live tree, from /proc/PID/smaps_rollup. RSS counts every shared
    library page in full in each process that maps it: the journalctl child the agent once had
    was 7.6 MB RSS, 6.6 of it clean pages of libc, libsystemd-shared and libcrypto that systemd
    and journald map too, so adding RSS over a tree counts libc twice. PSS divides each shared page
    among the processes that map it; USS is what only the tree holds. node_exporter is one
    static binary, so its three figures are close. Both count sharing with any process on the
    host: another lab node running the same image's binaries halves their file pages on both
    sides, so read PSS and USS from a run with no other lab up."""
    pss = uss = 0
    for q in [p, *p.children(recursive=True)]:
        with contextlib.suppress(OSError, psutil.Error), open(f"/proc/{q.pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key == "Pss":
                    pss += int(rest.split()[0])
                elif key in ("Private_Clean", "Private_Dirty"):
                    uss += int(rest.split()[0])
    return pss / 1024, uss / 1024


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
        pss, uss = tree_shares(p)
        out[k] = {"cpu_percent": 100 * cpu / wall, "rss_mb_peak": max(rss[k]), "rss_mb_mean": sum(rss[k]) / len(rss[k]),
                  "pss_mb": round(pss, 1), "uss_mb": round(uss, 1), **growth(rss[k])}
    return out


def growth(rss: list[float]) -> dict:
    """Growth over the window, one RSS sample a second: the mean of its first and last tenth,
    and the least-squares slope in MB per hour (a leak climbs; start-up work and a packages
    inventory now and then are bumps the slope averages out)."""
    k = max(1, len(rss) // 10)
    n = len(rss)
    mx, my = (n - 1) / 2, sum(rss) / n
    var = sum((i - mx) ** 2 for i in range(n))
    slope = sum((i - mx) * (y - my) for i, y in enumerate(rss)) / var if var else 0.0
    return {"rss_mb_first_tenth": round(sum(rss[:k]) / k, 2), "rss_mb_last_tenth": round(sum(rss[-k:]) / k, 2),
            "rss_growth_mb_per_hour": round(slope * 3600, 3)}


def shares(ag: dict, ne: dict) -> dict:
    """PSS and USS of both trees at the end of the window, and their ratios (see tree_shares)."""
    return {"pss_mb": ag["pss_mb"], "uss_mb": ag["uss_mb"],
            "baseline_pss_mb": ne["pss_mb"], "baseline_uss_mb": ne["uss_mb"],
            "pss_ratio": round(ag["pss_mb"] / ne["pss_mb"], 2) if ne["pss_mb"] else None,
            "uss_ratio": round(ag["uss_mb"] / ne["uss_mb"], 2) if ne["uss_mb"] else None}


def unit_main_process(node, unit: str) -> psutil.Process:
    """The unit's main process as the host sees it: in the unit's cgroup, not a child of
    another process there (the agent's children are counted in its tree)."""
    for d in node.cgroup:  # nspawn puts the node's tree under payload/
        for procs in d.rglob(f"system.slice/{unit}/cgroup.procs"):
            pids = {int(x) for x in procs.read_text().split()}
            for pid in pids:
                p = psutil.Process(pid)
                if p.ppid() not in pids:
                    return p
    raise RuntimeError(f"{unit} has no process in {node.name}'s cgroup")


def main_systemd(a) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "lab"))
    import nodelab

    try:
        lab = nodelab.Lab(Path(tempfile.mkdtemp(prefix="bench-agent-lab-"))).up()
    except nodelab.LabUnavailable as e:
        sys.exit(f"bench agent --systemd: {e}")
    try:
        node = lab.node("bench")
        node.enroll()
        node.sh("systemctl enable --now prometheus-node-exporter")
        assert lab.hub is not None
        hub = lab.hub

        def shipping() -> list:  # the agent reads the journal from its start on: write after it
            node.sh("logger -t bench 'is the agent reading the journal?'")
            return hub.query("SELECT 1 FROM logs WHERE node = 'bench'")

        nodelab.poll(shipping, 60, what="the agent shipping journal lines")
        time.sleep(a.warmup)
        procs = {"agent": unit_main_process(node, "homelab-agent.service"),
                 "node_exporter": unit_main_process(node, "prometheus-node-exporter.service")}

        def tick(n: int) -> None:
            if n % 10 == 0:
                node.sh(f"echo 'changed = {n}' > /etc/lab-bench.conf")
                threading.Thread(target=lambda: urllib.request.urlopen(
                    f"http://{node.addr}:9100/metrics", timeout=5).read(), daemon=True).start()

        res = measure(procs, a.seconds, tick)
        alive = node.sh("systemctl is-active homelab-agent", check=False).stdout.strip() == "active"
        collectors = node.sh("journalctl -u homelab-agent --no-pager -o cat | grep -c 'stepping aside'",
                             check=False).stdout.strip()
        shipped = lab.hub.query("SELECT kind, count(*) FROM events WHERE node = 'bench' GROUP BY kind")
    finally:
        lab.close()
    ag, ne = res["agent"], res["node_exporter"]
    print(json.dumps({
        "bench": "agent", "mode": "systemd", "seconds": a.seconds, "agent_alive": alive,
        "collectors_stepped_aside": int(collectors or 0), "events_by_kind": dict(shipped),
        "rss_mb": round(ag["rss_mb_peak"], 1), "rss_mb_mean": round(ag["rss_mb_mean"], 1),
        "cpu_percent": round(ag["cpu_percent"], 3),
        **{k: ag[k] for k in ("rss_mb_first_tenth", "rss_mb_last_tenth", "rss_growth_mb_per_hour")},
        "baseline": {"name": "prometheus-node-exporter.service @10s scrape, same node",
                     "rss_mb": round(ne["rss_mb_peak"], 1), "cpu_percent": round(ne["cpu_percent"], 3),
                     "rss_growth_mb_per_hour": ne["rss_growth_mb_per_hour"]},
        "rss_ratio": round(ag["rss_mb_peak"] / ne["rss_mb_peak"], 2),
        "cpu_ratio": round(ag["cpu_percent"] / ne["cpu_percent"], 2) if ne["cpu_percent"] else None,
        **shares(ag, ne),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench agent")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--warmup", type=float, default=15)
    ap.add_argument("--systemd", action="store_true",
                    help="measure in a booted node of the lab, both under their units (root)")
    a = ap.parse_args()
    if a.systemd:
        main_systemd(a)
        return
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
           "cpu_percent": round(ag["cpu_percent"], 3),
           **{k: ag[k] for k in ("rss_mb_first_tenth", "rss_mb_last_tenth", "rss_growth_mb_per_hour")}}
    if "node_exporter" in res:
        ne = res["node_exporter"]
        out["baseline"] = {"name": "prometheus-node-exporter @10s scrape", "rss_mb": round(ne["rss_mb_peak"], 1),
                           "cpu_percent": round(ne["cpu_percent"], 3), "rss_growth_mb_per_hour": ne["rss_growth_mb_per_hour"]}
        out["rss_ratio"] = round(ag["rss_mb_peak"] / ne["rss_mb_peak"], 2)
        out.update(shares(ag, ne))
        out["cpu_ratio"] = round(ag["cpu_percent"] / ne["cpu_percent"], 2) if ne["cpu_percent"] else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
