"""`homelab-hub proposals`, `approve`, `reject`, `audit verify`, `policy`: a person in charge of fixes.

These write the database directly (one short BEGIN IMMEDIATE each), as `enroll` does; the
running hub notices an approval within a second, checks its binding again and signs the job.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sqlite3
from collections.abc import Iterator

import click

from agent.settings import Settings
from hub.cli import data_dir_option, domain_errors, settings_from
from hub.config import db_path
from hub.proposals.policy_cli import policy
from hub.terminal import clean


@contextlib.contextmanager
def _db(data_dir, write: bool = False) -> Iterator[tuple[sqlite3.Connection, Settings]]:
    from hub.store import connect, open_db

    s = settings_from(data_dir=data_dir)
    path = db_path(s.data_dir)
    if not path.exists():
        raise click.ClickException(f"no hub database at {path} (is --data-dir right?)")
    db = open_db(path) if write else connect(path, readonly=True)
    try:
        if write:
            db.execute("BEGIN IMMEDIATE")
        yield db, s
        if write:
            db.execute("COMMIT")
    except BaseException:
        if write and db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _console():
    from rich.console import Console

    class SafeConsole(Console):
        """Every string printed loses its terminal escapes (node text: hub.terminal)."""

        def print(self, *objects, **kw):
            super().print(*(clean(o) if isinstance(o, str) else o for o in objects), **kw)

    c = SafeConsole(highlight=False, soft_wrap=True)
    # piped: do not squeeze tables into 80 columns (unless COLUMNS says how wide to be)
    if c.is_terminal or os.environ.get("COLUMNS"):
        return c
    return SafeConsole(highlight=False, soft_wrap=True, width=200)


def _text(v: object) -> str:
    """Node or model text inside a line with rich markup: escapes and markup both inert."""
    from rich.markup import escape

    return escape(clean("" if v is None else v))


@click.group(invoke_without_command=True)
@data_dir_option
@click.option("--state", "states", multiple=True, help="Only proposals in this state (repeatable), e.g. proposed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per proposal.")
@click.option("--limit", default=50, show_default=True, help="Newest N proposals.")
@click.option("--requests", is_flag=True, help="List the alerts' fix requests instead, with what became of each (and why candidates were refused).")
@click.pass_context
@domain_errors
def proposals(ctx, data_dir, states, as_json, limit, requests) -> None:
    """List proposed fixes (newest first); `proposals show ID` for one in full."""
    if ctx.invoked_subcommand is not None:
        return
    if requests:
        with _db(data_dir) as (db, _s):
            reqs = [dict(r) for r in db.execute(
                "SELECT id, ts, alert_id, rule, node, candidates, done, outcome FROM proposal_requests ORDER BY id DESC LIMIT ?",
                (limit,))]
        for r in reqs:
            if as_json:
                r["candidates"] = json.loads(r["candidates"])
                click.echo(json.dumps(r))
            else:
                click.echo(f"request {r['id']}  {_when(r['ts'])}  alert {r['alert_id']} ({r['rule']}) on {r['node']}: "
                           f"{r['outcome'] or 'waiting for the hub'}")
        return
    from hub.proposals.state import STATES

    bad = [s for s in states if s not in STATES]
    if bad:
        raise click.BadParameter(f"{bad[0]!r} is not a state ({', '.join(STATES)})", param_hint="--state")
    with _db(data_dir) as (db, _s):
        q = "SELECT id, created, updated, state, node, rule, playbook, risk, params, why, approved_by, reason FROM proposals"
        args: list = []
        if states:
            q += f" WHERE state IN ({','.join('?' * len(states))})"
            args += states
        rows = [dict(r) for r in db.execute(q + " ORDER BY id DESC LIMIT ?", (*args, limit))]
    if as_json:
        for r in rows:
            r["params"] = json.loads(r["params"])
            click.echo(json.dumps(r))
        return
    from hub.cli import narrow, table

    con = _console()
    if narrow(con):  # the rule under the node, risk under state, parameters under the playbook
        t = table("id", "node / rule", "state / risk", "playbook / params", short=("state / risk",))
        for r in rows:
            t.add_row(str(r["id"]), f"{r['node']}\n[dim]{_text(r['rule'])}[/]", f"{r['state']}\n{r['risk']}",
                      f"{r['playbook']}\n[dim]{_text(r['params'])}[/]")
        con.print(t)
        return
    t = table("id", "state", "node", "playbook", "risk", "params", "rule", "updated")
    for r in rows:
        t.add_row(str(r["id"]), r["state"], r["node"], r["playbook"], r["risk"], _text(r["params"]),
                  _text(r["rule"] or ""), _when(r["updated"]))
    con.print(t)


@proposals.command("show")
@click.argument("pid", type=int)
@data_dir_option
@click.option("--json", "as_json", is_flag=True)
@domain_errors
def show(pid, data_dir, as_json) -> None:
    """Everything about proposal PID: the exact script, parameters, check output, evidence."""
    from hub.playbooks import Registry
    from hub.proposals.state import get, history

    with _db(data_dir) as (db, s):
        p = get(db, pid)
        hist = history(db, pid)
        events = {}
        for e in json.loads(p["evidence"] or "[]")[:50]:
            eid = e if isinstance(e, int) else (int(e.split(":", 1)[1]) if isinstance(e, str) and e.startswith("event:")
                                                and e.split(":", 1)[1].isdigit() else None)
            if eid is not None:
                row = db.execute("SELECT id, node, kind, ts, data FROM events_full WHERE id = ?", (eid,)).fetchone()
                if row:
                    events[e if isinstance(e, int) else str(e)] = dict(row)
        jobs = [dict(r) for r in db.execute(
            "SELECT id, mode, state, created, finished, exit_code, reason, output FROM jobs WHERE proposal_id = ? ORDER BY created",
            (pid,))]
    pb = Registry.from_settings(s).get(p["playbook"])
    script = p.pop("script", None)
    p["params"] = json.loads(p["params"])
    p["evidence"] = json.loads(p["evidence"] or "[]")
    check = next((j for j in reversed(jobs) if j["mode"] == "check"), None)
    if as_json:
        click.echo(json.dumps({**p, "history": hist, "jobs": jobs, "script": script,
                               "evidence_events": list(events.values()),
                               "script_sha256_now": pb.sha256 if pb else None}))
        return
    c = _console()
    c.print(f"[bold]proposal {pid}[/]  {p['state']}   node [bold]{p['node']}[/]   "
            f"playbook [bold]{p['playbook']}[/] ({p['risk']})")
    c.print(f"why:       {_text(p['why'])}")
    c.print(f"chosen by: {p['chosen_by']}" + (f" — {_text(p['rationale'])}" if p["rationale"] else ""))
    if p["reason"]:
        c.print(f"reason:    {_text(p['reason'])}")
    c.print("parameters (given to the script only as environment variables):")
    for k, v in p["params"].items():
        c.print(f"  PARAM_{k.upper()}={_text(json.dumps(v))}")
    c.print(f"script sha256: {p['sha256']}")
    if pb is None:
        c.print("[red]the playbook is no longer installed on the hub[/]")
    elif pb.sha256 != p["sha256"]:
        c.print(f"[red]the script changed since this was proposed (now {pb.sha256}): it cannot be approved[/]")
    if p["evidence"]:
        c.print("evidence:")
        for e in p["evidence"]:
            ev = events.get(e if isinstance(e, int) else str(e))
            if ev:
                c.print(f"  - event {ev['id']} {_when(ev['ts'])} {ev['node']} {ev['kind']}: {ev['data'][:300]}", markup=False)
            else:
                c.print(f"  - {json.dumps(e) if not isinstance(e, str) else e}", markup=False)
    if check:
        c.print(f"check (dry run) on the node: {check['state']}" + (f", exit {check['exit_code']}" if check["exit_code"] is not None else ""))
        if check["output"]:
            c.print(check["output"].rstrip(), markup=False)
        if check["reason"]:
            c.print(f"  {check['reason']}", markup=False)
    elif pb is not None and pb.check and pb.risk == "read-only":
        c.print("check (dry run): not reported by the node yet")
    elif pb is not None and pb.check:
        c.print(f"check (dry run): not run before approval ({pb.name} is {pb.risk})")
    c.print("history:")
    for h in hist:
        c.print(f"  {_when(h['ts'])}  {h['from'] or '-'} -> {h['to']}  by {h['actor']}" + (f"  ({h['note']})" if h["note"] else ""), markup=False)
    for j in jobs:
        if j["mode"] != "check" and j["output"]:
            c.print(f"{j['mode']} output ({j['state']}):")
            c.print(j["output"].rstrip(), markup=False)
    if script is not None:
        c.print(f"script (as proposed, sha256 {p['sha256'][:16]}...):")
        c.print(script.rstrip(), markup=False)


@click.command()
@click.argument("pid", type=int)
@data_dir_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (the destructive tier still needs --confirm-node).")
@click.option("--confirm-node", help="The node's name: required to approve a destructive playbook non-interactively.")
@domain_errors
def approve(pid, data_dir, yes, confirm_node) -> None:
    """Approve proposal PID: bound to the script's hash, the parameters, the node and an expiry."""
    from hub.playbooks import Registry
    from hub.proposals.state import approve as do_approve
    from hub.proposals.state import get, os_user

    with _db(data_dir) as (db, s):
        p = get(db, pid)
    pb = Registry.from_settings(s).get(p["playbook"])
    click.echo(f"proposal {pid}: run {p['playbook']} ({p['risk']}) on {p['node']} with {clean(p['params'])}")
    click.echo(f"script sha256 {p['sha256']}")
    if not yes:
        click.confirm("Approve?", abort=True)
    if p["risk"] == "destructive" and confirm_node is None:
        if yes:
            raise click.ClickException("destructive playbook: pass --confirm-node NODE (or approve interactively)")
        confirm_node = click.prompt(f"This playbook is destructive. Type the node name ({p['node']}) to confirm")
    actor = os_user()
    with _db(data_dir, write=True) as (db, s):
        r = do_approve(db, pid, actor, pb, ttl=s.approval_ttl, budget=s.run_budget, confirm_node=confirm_node)
    if r["state"] != "approved":
        raise click.ClickException(f"proposal {pid} was not approved: it is {r['state']} ({r['reason']})")
    click.echo(f"approved by {actor}; valid until {_when(r['approval_expires'])}. The hub dispatches it to {p['node']}.")


@click.command()
@click.argument("pid", type=int)
@click.option("--reason", required=True, help="Why (recorded with your name).")
@data_dir_option
@domain_errors
def reject(pid, reason, data_dir) -> None:
    """Reject proposal PID, with a reason."""
    from hub.proposals import os_user
    from hub.proposals.state import reject as do_reject

    actor = os_user()
    with _db(data_dir, write=True) as (db, _s):
        do_reject(db, pid, actor, reason)
    click.echo(f"proposal {pid} rejected by {actor}")


@click.group()
def audit() -> None:
    """The hash-chained audit trail of proposals, decisions, dispatches and results."""


@audit.command("verify")
@data_dir_option
@domain_errors
def audit_verify(data_dir) -> None:
    """Check the audit chain; exits non-zero naming the first row that was altered or removed."""
    from hub import audit as audit_mod

    with _db(data_dir) as (db, _s):
        v = audit_mod.verify(db)
    if not v.ok:
        raise click.ClickException(f"audit chain BROKEN at row {v.bad_id}: {v.problem} ({v.rows} rows before it are intact)")
    click.echo(f"audit chain intact: {v.rows} rows; head {v.head}")


COMMANDS = [proposals, approve, reject, audit, policy]
