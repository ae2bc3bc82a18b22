"""`homelab-hub policy add|list|revoke`: standing approvals (see hub/proposals/policies.py)."""

from __future__ import annotations

import json

import click

from hub.cli import data_dir_option, domain_errors, settings_from


@click.group()
def policy() -> None:
    """Standing approvals: approve a bounded fix once; matching proposals then run without a
    prompt, are verified, and are audited as approved by the policy."""


@policy.command("add")
@click.argument("playbook")
@click.option("--node", "nodes", multiple=True, required=True, help="A node it may run on (repeatable); '*' for every node.")
@click.option("--param", "params", multiple=True,
              help="A bound for each parameter: NAME=VALUE, NAME=~REGEX (whole value), NAME=MIN..MAX, NAME=* (repeatable).")
@click.option("--max-risk", default="change", show_default=True, type=click.Choice(["read-only", "change"]),
              help="The highest risk tier it approves (destructive always needs a person).")
@click.option("--rate", default="1/1h", show_default=True, help="At most RUNS per PERIOD, e.g. 2/1d.")
@click.option("--window", help="Maintenance window in the hub's local time: HH:MM-HH:MM, optionally after days (sat,sun 02:00-05:00).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@data_dir_option
@domain_errors
def add(playbook, nodes, params, max_risk, rate, window, yes, data_dir) -> None:
    """Approve PLAYBOOK once, within bounds, for the proposals that match them."""
    from hub.errors import BadRequest
    from hub.playbooks import Registry
    from hub.proposals import os_user, policies
    from hub.proposals.cli import _db

    bounds = {}
    for spec in params:
        name, bound = policies.parse_bound(spec)
        if name in bounds:
            raise BadRequest(f"--param {name} given twice")
        bounds[name] = bound
    runs = policies.parse_rate(rate)
    win = policies.parse_window(window) if window else None
    pb = Registry.from_settings(settings_from(data_dir=data_dir)).get(playbook)
    if pb is None:
        raise BadRequest(f"no such playbook {playbook!r} installed on the hub")
    actor = os_user()
    with _db(data_dir, write=True) as (db, _s):
        pid = policies.add(db, pb=pb, nodes=list(nodes), bounds=bounds, max_risk=max_risk, rate=runs,
                           window=win, actor=actor)
        text = policies.describe(policies.get(db, pid))
        click.echo(f"policy {pid}: {text}")
        click.echo(f"script sha256 {pb.sha256} (a changed script is not covered)")
        if not yes and not click.confirm("Approve this standing policy?"):
            raise click.Abort()  # rolls the policy back: nothing was approved
    click.echo(f"policy {pid} approved by {actor}: matching proposals now run without a prompt")


@policy.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per policy.")
@data_dir_option
@domain_errors
def list_(as_json, data_dir) -> None:
    """Every policy: active, suspended (and why) or revoked, with its runs."""
    from hub.proposals import policies
    from hub.proposals.cli import _console, _db, _when

    with _db(data_dir) as (db, _s):
        pols = policies.all_(db)
        for p in pols:
            p["runs"] = [dict(r) for r in db.execute(
                "SELECT proposal_id, started, outcome FROM policy_runs WHERE policy_id = ? ORDER BY started", (p["id"],))]
    if as_json:
        for p in pols:
            click.echo(json.dumps(p))
        return
    c = _console()
    if not pols:
        c.print("no policies")
    for p in pols:
        ok = sum(1 for r in p["runs"] if r["outcome"] == "verified")
        c.print(f"policy {p['id']}  {p['state']}  {policies.describe(p)}", markup=False)
        c.print(f"  by {p['created_by']} at {_when(p['created'])}; {len(p['runs'])} run(s), {ok} verified,"
                f" {p['failures']} unverified in a row" + (f"; {p['reason']}" if p["reason"] else ""), markup=False)


@policy.command("revoke")
@click.argument("pid", type=int)
@click.option("--reason", required=True, help="Why (recorded with your name).")
@data_dir_option
@domain_errors
def revoke(pid, reason, data_dir) -> None:
    """Revoke policy PID: nothing more runs under it."""
    from hub.proposals import os_user, policies
    from hub.proposals.cli import _db

    actor = os_user()
    with _db(data_dir, write=True) as (db, _s):
        policies.revoke(db, pid, actor, reason)
    click.echo(f"policy {pid} revoked by {actor}")
