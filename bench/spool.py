"""python -m bench spool [--kept 25000] [--cycles 300]

The agent's spool at steady state: every event is appended, shipped and acked, and acked
events are kept a day for a hub restored from a backup (``keep_acked``), so a node that ran a
day holds tens of thousands of acked rows (~25,000 at a quiet server's rates: metrics every
10 s, ~14,000 log lines, heartbeats). Measured: CPU per append + ack of one event with
``--kept`` acked events in the spool, against the same with an empty spool, same run, same
disk. ratio = kept / empty; 1.0 means the agent's cost does not grow with what it keeps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from agent.spool import Spool

BLOB = b"x" * 600  # a typical encoded log event


def cycle_ms(path: Path, kept: int, cycles: int) -> float:
    sp = Spool(path, 10**10, keep_acked=86400)
    for start in range(0, kept, 1000):
        sp.ack(sp.append([BLOB] * min(1000, kept - start)))
    t = time.process_time()
    for _ in range(cycles):
        sp.ack(sp.append([BLOB]))
    ms = (time.process_time() - t) * 1000 / cycles
    sp.close()
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench spool")
    ap.add_argument("--kept", type=int, default=25000)
    ap.add_argument("--cycles", type=int, default=300)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-spool-", dir="/var/tmp"))
    try:
        runs = []
        for i in range(3):  # alternated: the disk and the machine's load move
            runs.append((cycle_ms(work / f"empty{i}.db", 0, a.cycles), cycle_ms(work / f"kept{i}.db", a.kept, a.cycles)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    empty = sorted(r[0] for r in runs)[1]
    kept = sorted(r[1] for r in runs)[1]
    print(json.dumps({"bench": "spool", "kept": a.kept, "cycles": a.cycles,
                      "append_ack_cpu_ms": round(kept, 3),
                      "baseline": {"name": "the same with an empty spool, same run", "append_ack_cpu_ms": round(empty, 3)},
                      "ratio": round(kept / empty, 2)}))
