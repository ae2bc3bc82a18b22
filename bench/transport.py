"""python -m bench transport [--senders 4] [--events 25000] [--batch 1000]

HTTP batches vs a WebSocket stream, through the same hub app (real routes, real writer,
same decode and commit path). The WebSocket variant sends the same frames as binary
messages and gets the same JSON ack per frame; it exists only in this benchmark, which is
how the hub's choice of plain HTTP was made (see docs/wire.md).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path

from aiohttp import WSMsgType, web

from agent import wire
from bench.ingest import make_events


def serve(data_dir: str, port: int, ready) -> None:
    from hub.app import create_app
    from hub.config import load_settings
    from hub.ingest import _json_of, authenticate
    from hub.keys import WRITER

    async def stream(request: web.Request) -> web.WebSocketResponse:
        node = await authenticate(request)
        ws = web.WebSocketResponse(max_msg_size=wire.MAX_BATCH_BYTES)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                break
            frame = wire.decode_batch(msg.data)
            r = await request.app[WRITER].ingest(node, frame, _json_of(frame), request.remote)
            await ws.send_str(json.dumps({"ack": r.ack, "stored": r.stored, "duplicates": r.duplicates}))
        return ws

    app = create_app(load_settings(data_dir=Path(data_dir)))
    app.router.add_get("/v1/stream", stream)

    async def main():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def bodies(idx: int, node: str, n: int, batch: int) -> list[bytes]:
    evs = make_events(idx, n)
    return [wire.encode_batch(node, time.time(), [(s, wire.encode_event(e)) for s, e in evs[k:k + batch]])
            for k in range(0, n, batch)]


def http_sender(port, cred, node, idx, n, batch, go, out):
    bs = bodies(idx, node, n, batch)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    out.put("ready")
    go.wait()
    for b in bs:
        c.request("POST", "/v1/ingest", b, {"Authorization": f"Bearer {cred}"})
        r = c.getresponse()
        r.read()
        assert r.status == 200
    out.put("done")


def ws_sender(port, cred, node, idx, n, batch, go, out):
    import aiohttp

    bs = bodies(idx, node, n, batch)

    async def run():
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {cred}"}) as s:
            async with s.ws_connect(f"http://127.0.0.1:{port}/v1/stream", max_msg_size=0) as ws:
                out.put("ready")
                await asyncio.get_running_loop().run_in_executor(None, go.wait)
                for b in bs:
                    await ws.send_bytes(b)
                    await ws.receive_str()

    asyncio.run(run())
    out.put("done")


def run_one(kind: str, senders: int, n: int, batch: int, work: Path) -> float:
    from bench.common import free_port

    data = work / kind
    data.mkdir()
    ctx = mp.get_context("spawn")
    port, ready = free_port(), ctx.Event()
    hub = ctx.Process(target=serve, args=(str(data), port, ready), daemon=True)
    hub.start()
    ready.wait(60)
    creds = []
    import subprocess
    import sys

    for i in range(senders):
        tok = subprocess.run([sys.executable, "-m", "hub", "enroll", f"n{i}", "--data-dir", str(data)],
                             capture_output=True, text=True, check=True).stdout.split()[-1]
        c = http.client.HTTPConnection("127.0.0.1", port)
        c.request("POST", "/v1/join", json.dumps({"token": tok}))
        creds.append(json.loads(c.getresponse().read())["credential"])
    go, out = ctx.Event(), ctx.Queue()
    target = http_sender if kind == "http" else ws_sender
    ps = [ctx.Process(target=target, args=(port, creds[i], f"n{i}", i, n, batch, go, out)) for i in range(senders)]
    for p in ps:
        p.start()
    for _ in ps:
        assert out.get(timeout=300) == "ready"
    t = time.perf_counter()
    go.set()
    for _ in ps:
        assert out.get(timeout=600) == "done"
    rate = senders * n / (time.perf_counter() - t)
    for p in ps:
        p.join(30)
    hub.terminate()
    hub.join(30)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench transport")
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--events", type=int, default=25_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-transport-"))
    rates: dict[str, list[float]] = {"http": [], "websocket": []}
    try:
        for r in range(a.rounds):  # alternate, so drift in machine load hits both
            for kind in ("http", "websocket"):
                sub = work / f"{r}"
                sub.mkdir(exist_ok=True)
                rates[kind].append(run_one(kind, a.senders, a.events, a.batch, sub))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {k: max(v) for k, v in rates.items()}
    print(json.dumps({"bench": "transport", "http_events_per_s": round(best["http"]),
                      "websocket_events_per_s": round(best["websocket"]),
                      "ws_over_http": round(best["websocket"] / best["http"], 3),
                      "runs": {k: [round(x) for x in v] for k, v in rates.items()}}))


if __name__ == "__main__":
    main()
