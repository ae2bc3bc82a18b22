"""python -m bench processes [SAMPLES]: CPU cost of one top-processes sample, reading /proc
directly (what the agent does) versus psutil.process_iter with the same attributes.

Both run in this process against the same process table; CPU time is process_time().
A few hundred busy-ish children are started first so the table is not trivially small.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from agent.collectors.processes import ProcSampler, PsutilSampler


def cost(sampler, n: int) -> float:
    sampler.sample()  # baseline, as in the collector
    t = time.process_time()
    for _ in range(n):
        sampler.sample()
    return (time.process_time() - t) / n


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    kids = [subprocess.Popen(["sleep", "60"]) for _ in range(200)]
    try:
        nproc = sum(1 for p in os.listdir("/proc") if p.isdigit())
        proc_s = cost(ProcSampler(10), n)
        psutil_s = cost(PsutilSampler(10), n)
    finally:
        for k in kids:
            k.kill()
            k.wait()
    print(f"{nproc} processes; /proc: {proc_s * 1000:.2f} ms CPU per sample; psutil: {psutil_s * 1000:.2f} ms", file=sys.stderr)
    print(json.dumps({
        "bench": "processes", "processes": nproc, "samples": n,
        "proc_cpu_ms_per_sample": round(proc_s * 1000, 3),
        "psutil_cpu_ms_per_sample": round(psutil_s * 1000, 3),
        "psutil_over_proc_ratio": round(psutil_s / proc_s, 2) if proc_s else None,
        "proc_cpu_percent_at_60s": round(proc_s / 60 * 100, 5),
    }))
