"""python -m bench footprint [--seconds 20] [--samples 20]

What the agent costs, piece by piece, each measured in a fresh interpreter (a subprocess):

- imports: RSS after importing each layer the agent stands on, cumulatively (the bare
  interpreter, asyncio, sqlite3, msgspec, the agent's runtime, ``run``'s entry point, with
  OpenSSL kept out as ``run`` keeps it out for an http:// hub; then OpenSSL on top),
  then each collector's module on top of the runtime alone;
- collectors: each collector running by itself on this machine for --seconds (its own
  event loop, events counted and dropped): RSS after start, CPU per second of running,
  RSS growth over the window, events emitted. Collectors with a ``sample()`` (metrics,
  processes) also report CPU per sample over --samples calls.

Baseline, same run: the bare interpreter (RSS) and the runtime without collectors. Growth
over an hour is not measured here (--seconds bounds it); docs/performance.md says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

# As `homelab-agent run` imports them: OpenSSL kept out first (agent/tls.py), as it is for an
# http:// hub; the last row adds it back, which an https hub, a pinned certificate or checks do.
NO_OPENSSL = "from agent.tls import keep_openssl_out; keep_openssl_out()"
LAYERS = [
    ("python (bare)", ""),
    ("+ asyncio (OpenSSL kept out)", NO_OPENSSL + "\nimport asyncio"),
    ("+ sqlite3", "import sqlite3"),
    ("+ msgspec, agent.wire", "import agent.wire"),
    ("+ agent.runtime (spool, shipper, http)", "import agent.runtime, agent.jobs"),
    ("+ agent.cli (run's entry: no click, no psutil)", "import agent.cli"),
    ("+ OpenSSL (ssl, hashlib's _hashlib)", "import sys\nfor m in ('ssl', '_hashlib'):\n    del sys.modules[m]\nimport ssl, _hashlib"),
]

RSS = """
def _rss():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
"""


def child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", RSS + textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def imports() -> list[dict]:
    rows, done = [], []
    for label, stmt in LAYERS:
        done.append(stmt)
        r = child("\n".join(done) + "\nimport json; print(json.dumps({'rss_mb': _rss()}))")
        rows.append({"what": label, **r})
    from agent.collectors import REGISTRY

    base = NO_OPENSSL + "\nimport agent.runtime, agent.jobs\n"
    before = child(base + "import json; print(json.dumps({'rss_mb': _rss()}))")["rss_mb"]
    for target in REGISTRY.values():
        module = target.split(":")[0]
        r = child(base + f"import {module}\nimport json; print(json.dumps({{'rss_mb': _rss()}}))")
        if "rss_mb" in r:
            r["delta_mb"] = round(r["rss_mb"] - before, 2)
        rows.append({"what": f"runtime + {module}", **r})
    return rows


COLLECTOR = NO_OPENSSL + """
import asyncio, json, os, resource, shutil, tempfile, time
from pathlib import Path
from agent import collectors
from agent.config import AGENT_OPTS
from agent.settings import load
from agent.state import State

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime

tmp = Path(tempfile.mkdtemp(prefix='bench-footprint-'))
s = load(AGENT_OPTS, {{'state_dir': tmp, 'watch': ['/etc']}}, None, env={{}})
cls = collectors.load({name!r})
why = cls.unavailable(s)
if why:
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({{'unavailable': why}}))
    raise SystemExit
n = [0]
def emit(e):
    n[0] += 1
    return True
inst = cls(s, emit, State(tmp / 'state.db'))
out = {{}}
if hasattr(inst, 'sample'):
    inst.sample()
    c0 = cpu()
    for _ in range({samples}):
        inst.sample()
    out['cpu_ms_per_sample'] = round((cpu() - c0) * 1000 / {samples}, 2)

async def main():
    task = asyncio.create_task(inst.run())
    await asyncio.sleep(2)  # start-up: first scan, first sample
    out['rss_mb_started'] = round(_rss(), 1)
    c0, t0 = cpu(), time.monotonic()
    await asyncio.sleep({seconds})
    out['cpu_percent'] = round(100 * (cpu() - c0) / (time.monotonic() - t0), 3)
    out['rss_growth_mb'] = round(_rss() - out['rss_mb_started'], 2)
    task.cancel()
    try:
        await task
    except BaseException:
        pass
    close = getattr(inst, 'close', None)
    if close:
        close()

asyncio.run(main())
shutil.rmtree(tmp, ignore_errors=True)
out['events'] = n[0]
print(json.dumps(out))
"""


def collectors_table(seconds: float, samples: int) -> list[dict]:
    from agent.collectors import REGISTRY

    rows = []
    for name in REGISTRY:
        r = child(COLLECTOR.format(name=name, seconds=seconds, samples=samples))
        rows.append({"collector": name, **r})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench footprint")
    ap.add_argument("--seconds", type=float, default=20.0, help="each collector runs this long (bounded to 600)")
    ap.add_argument("--samples", type=int, default=20)
    a = ap.parse_args()
    seconds = min(max(a.seconds, 1.0), 600.0)
    rows = imports()
    cols = collectors_table(seconds, a.samples)
    bare = rows[0].get("rss_mb")
    print(json.dumps({"bench": "footprint", "seconds": seconds, "baseline_bare_python_rss_mb": bare,
                      "imports": rows, "collectors": cols}))


if __name__ == "__main__":
    main()
