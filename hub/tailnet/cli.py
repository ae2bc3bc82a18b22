"""`homelab-hub tailnet sync`: the tailnet's devices next to the hub's enrolled nodes.

Lists devices through Tailscale's HTTP API with the ``tailscale`` package (an API access
token, or an OAuth client with the ``devices:core:read`` scope) and shows which devices are
enrolled, which are not, and which enrolled nodes the hub has not heard from (or that are not
on the tailnet). Read-only on both sides. A device matches a node by the tailnet identity the
hub recorded for it (the device's stable node id), else by name (the node name equals the
device's hostname or the first label of its MagicDNS name).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import click
from yarl import URL

from hub.cli import data_dir_option, domain_errors, settings_from
from hub.config import db_path
from hub.errors import BadRequest, HubError
from hub.tailnet.local import Identity

API = URL("https://api.tailscale.com")


def _rewrite(base: str):
    """aiohttp client middleware sending the tailscale package's requests to ``base``
    (the package has no base-URL setting; a proxy or a test stand-in needs one)."""
    target = URL(base.rstrip("/"))

    async def middleware(req, handler):
        if req.url.host == API.host:
            new = target.with_path(target.path.rstrip("/") + req.url.path).with_query(req.url.query)
            req.url = new
            req.headers["Host"] = new.raw_authority
        return await handler(req)

    return middleware


async def fetch_devices(settings) -> list[dict[str, Any]]:
    import aiohttp
    from tailscale import Tailscale, TailscaleError

    if not settings.tailscale_api_key and not (settings.tailscale_oauth_client_id and settings.tailscale_oauth_client_secret):
        raise BadRequest("tailnet sync needs tailscale_api_key, or tailscale_oauth_client_id and "
                         "tailscale_oauth_client_secret (see docs/fleet.md)")
    mws = (_rewrite(settings.tailscale_api_url),) if settings.tailscale_api_url else ()
    async with aiohttp.ClientSession(middlewares=mws) as session:
        ts = Tailscale(tailnet=settings.tailnet, api_key=settings.tailscale_api_key or None,
                       oauth_client_id=settings.tailscale_oauth_client_id or None,
                       oauth_client_secret=settings.tailscale_oauth_client_secret or None,
                       session=session, request_timeout=20)
        try:
            devices = await ts.devices()
        except TailscaleError as e:
            raise HubError(f"Tailscale API: {e}") from None
        finally:
            await ts.close()
    out = []
    for d in devices.values():
        out.append({
            "id": d.node_id, "name": d.name.rstrip("."), "hostname": d.hostname,
            "addresses": list(d.addresses), "os": d.os, "user": d.user,
            "last_seen": d.last_seen.timestamp() if d.last_seen else None,
            "authorized": d.authorized,
        })
    return sorted(out, key=lambda d: d["name"])


def reconcile(devices: list[dict], nodes: list[dict], offline_after: float, now: float) -> dict[str, list]:
    by_id, by_name = {}, {}
    for n in nodes:
        if n["tailnet_identity"]:
            try:
                by_id[Identity.from_text(n["tailnet_identity"]).id] = n["name"]
            except (ValueError, KeyError):
                pass
        by_name[n["name"].lower()] = n["name"]
    enrolled, not_enrolled, matched = [], [], set()
    for d in devices:
        node = by_id.get(d["id"])
        how = "identity"
        if node is None:
            how = "name"
            node = by_name.get(d["hostname"].lower()) or by_name.get(d["name"].split(".")[0].lower())
        if node is None:
            not_enrolled.append(d)
        else:
            matched.add(node)
            enrolled.append({**d, "node": node, "matched_by": how})
    not_seen = [
        {"node": n["name"], "last_seen": n["last_seen"]}
        for n in nodes if n["last_seen"] is None or now - n["last_seen"] > offline_after
    ]
    not_on_tailnet = [n["name"] for n in nodes if n["name"] not in matched]
    return {"enrolled": enrolled, "not_enrolled": not_enrolled, "not_seen": not_seen,
            "not_on_tailnet": not_on_tailnet}


def _nodes(path) -> list[dict]:
    from hub.store import connect

    if not path.exists():
        return []
    db = connect(path, readonly=True)
    try:
        return [dict(r) for r in db.execute("SELECT name, last_seen, tailnet_identity FROM nodes ORDER BY name")]
    finally:
        db.close()


def _ago(ts: float | None, now: float) -> str:
    from hub.queries import ago

    return ago(None if ts is None else now - ts)


@click.group()
def tailnet() -> None:
    """Tailscale: the tailnet's devices and the hub's nodes."""


@tailnet.command("sync")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object with the four lists.")
@domain_errors
def sync(data_dir, as_json) -> None:
    """List the tailnet's devices: enrolled, not enrolled, and enrolled nodes not seen."""
    s = settings_from(data_dir=data_dir)
    devices = asyncio.run(fetch_devices(s))
    now = time.time()
    report = reconcile(devices, _nodes(db_path(s.data_dir)), s.offline_after, now)
    if as_json:
        click.echo(json.dumps(report))
        return
    from rich.console import Console

    from hub.cli import table

    t = table("device", "addresses", "tailnet last seen", "node", title="Tailnet devices",
              keep=("device", "node"))
    for d in report["enrolled"]:
        t.add_row(d["name"], " ".join(d["addresses"]), _ago(d["last_seen"], now), f"[green]{d['node']}[/]")
    for d in report["not_enrolled"]:
        t.add_row(d["name"], " ".join(d["addresses"]), _ago(d["last_seen"], now), "[yellow]not enrolled[/]")
    con = Console()
    con.print(t)
    for n in report["not_seen"]:
        con.print(f"[red]enrolled node {n['node']} not seen by the hub[/] (last: {_ago(n['last_seen'], now)})")
    for name in report["not_on_tailnet"]:
        con.print(f"enrolled node {name} matches no tailnet device")


COMMANDS = [tailnet]
