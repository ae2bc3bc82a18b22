"""Notifications end to end: a live hub, a real rule, and real receivers on loopback (an ntfy-API
HTTP server, aiosmtpd for email, a JSON webhook); the outbox survives a hub restart."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
from aiohttp import web
from notify_receivers import Mailbox, Ntfy

from agent import wire
from hub.notify.web import COURIER
from tests.conftest import Proc, async_wait_for, free_port, query
from tests.hub.rules.rules_fixtures import RulesHub, rules_hub  # noqa: F401 - fixture

RULES = """\
rules:
  - name: srv-touched
    severity: critical
    event:
      kind: file
      where: {path: {startswith: /srv/conf}}
    group_by: [node, path]
    keep_firing_for: 2s
    annotations: {summary: "{{ path }} {{ action }} on {{ node }}"}
  - name: app-config-broken
    severity: warning
    event:
      kind: file
      where: {path: /srv/app.conf}
    group_by: [node]
    annotations: {summary: "app.conf changed on {{ node }}"}
    propose:
      - playbook: restart-unit
        params: {unit: app.service}
  - name: chatter
    severity: info
    event:
      kind: file
      where: {path: /etc/motd}
    group_by: [node]
"""


def rules_dir(tmp_path):
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    (d / "r.yaml").write_text(RULES)
    return d


def touched(path: str = "/srv/conf") -> wire.FileChange:
    return wire.FileChange(ts=time.time(), action="modify", path=path)


@pytest.fixture
async def ntfy():
    n = await Ntfy().start()
    yield n
    await n.stop()


@pytest.fixture
def mailbox():
    m = Mailbox().start()
    yield m
    m.stop()


def mine(ntfy: Ntfy) -> list[dict]:
    """Messages about this test's rules (the shipped rules may fire on their own)."""
    return [m for m in ntfy.messages if "srv-touched" in (m["message"] + (m["title"] or ""))
            or "restart-unit" in (m["title"] or "")]


async def test_firing_and_resolved_reach_ntfy_email_and_webhook_once(rules_hub, tmp_path, ntfy, mailbox):  # noqa: F811
    hooked = []

    async def hook(request):
        hooked.extend(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        h = await rules_hub(rules_dir=rules_dir(tmp_path), notify_urls=[ntfy.url(), mailbox.url()],
                            webhooks=[f"http://127.0.0.1:{port}/hook"], notify_group_wait=0.2)
        await h.send("n1", [touched(), touched("/etc/motd")])  # motd: info, below the minimum
        await async_wait_for(lambda: len(mine(ntfy)) >= 2 and len(mailbox.mails) >= 2, 40,
                             what="firing and resolved via ntfy and email")
        await async_wait_for(lambda: len([a for a in hooked if a["rule"] == "srv-touched"]) >= 2,
                             40, what="firing and resolved via the webhook")
    finally:
        await runner.cleanup()
    firing, resolved = mine(ntfy)
    assert firing["topic"] == "homelab" and firing["title"] == "[critical] srv-touched on n1"
    assert "/srv/conf modify on n1" in firing["message"]
    assert resolved["title"] == "[resolved] srv-touched on n1"
    assert "Subject: [critical] srv-touched on n1" in mailbox.mails[0]
    assert "Subject: [resolved] srv-touched on n1" in mailbox.mails[1]
    assert not any("motd" in m["message"] or "chatter" in (m["title"] or "") for m in ntfy.messages)
    assert [a["transition"] for a in hooked if a["rule"] == "srv-touched"] == ["firing", "resolved"]
    rows = h.query("SELECT channel, state, attempts FROM notify_outbox WHERE title LIKE '%srv-touched%'")
    assert sorted(rows) == sorted([("apprise", "sent", 1)] * 4 + [("webhook", "sent", 1)] * 2)
    # targets are named by a hash: the URLs (tokens, passwords) never reach the database
    assert not h.query("SELECT 1 FROM notify_outbox WHERE target LIKE '%127.0.0.1%'")


async def test_burst_is_grouped_then_rate_limited(rules_hub, tmp_path, ntfy):  # noqa: F811
    h = await rules_hub(rules_dir=rules_dir(tmp_path), notify_urls=[ntfy.url()],
                        notify_group_wait=1.5, notify_rate_limit=1)
    await h.send("n1", [touched(f"/srv/conf.d/{i}") for i in range(3)])
    await async_wait_for(lambda: mine(ntfy), 40, what="the grouped message")
    (msg,) = mine(ntfy)
    assert msg["title"] == "homelab: 3 notifications (3 firing)"
    assert all(f"/srv/conf.d/{i} modify on n1" in msg["message"] for i in range(3))
    courier = h.app[COURIER]
    # the three resolutions are due, but the hour's one message is spent: they are held
    await async_wait_for(lambda: courier.stats["held"] >= 3, 40, what="resolutions held")
    assert h.query("SELECT count(*) FROM notify_outbox WHERE topic = 'resolved' AND state = 'pending'") == [(3,)]
    assert len(mine(ntfy)) == 1


async def test_proposal_awaiting_approval_and_fix_outcome(rules_hub, tmp_path, ntfy):  # noqa: F811
    from hub.proposals import state

    h = await rules_hub(rules_dir=rules_dir(tmp_path), notify_urls=[ntfy.url()], notify_group_wait=0)
    await h.send("n1", [touched("/srv/app.conf")])
    await async_wait_for(lambda: "[approve?] restart-unit on n1" in told(ntfy), 40,
                         what="proposal notification")
    (pid,) = h.query("SELECT id FROM proposals WHERE playbook = 'restart-unit'")[0]
    assert f"approve: homelab-hub approve {pid}" in told(ntfy)
    assert 'restart-unit on n1 {"unit":"app.service"}' in told(ntfy)

    def fail(db):
        state.transition(db, pid, "approved", "tester")
        state.transition(db, pid, "failed", "hub", "node refused", reason="remote execution is off")

    await _writer(h).run(fail)
    await async_wait_for(lambda: "[fix failed] restart-unit on n1" in told(ntfy), 40,
                         what="fix outcome notification")
    assert f"proposal {pid} (app-config-broken): failed. remote execution is off" in told(ntfy)
    assert told(ntfy).count("[approve?]") == 1


def told(ntfy: Ntfy) -> str:
    """Everything said, as title and body per message (a grouped message lists each item's)."""
    return "".join(f"{m['title']}\n{m['message']}\n" for m in ntfy.messages)


def _writer(h: RulesHub):
    from hub.keys import WRITER

    return h.app[WRITER]


def _hub(tmp_path, data_dir, port, ntfy: Ntfy, n: int) -> Proc:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    env.update(HOMELAB_HUB_NOTIFY_URLS=ntfy.url(), HOMELAB_HUB_NOTIFY_GROUP_WAIT="0",
               HOMELAB_HUB_RULES_DIR=str(rules_dir(tmp_path)), HOMELAB_MODEL="none")
    return Proc([sys.executable, "-m", "hub", "serve", "--data-dir", str(data_dir),
                 "--listen", f"127.0.0.1:{port}"], tmp_path / f"hub-{n}.log", env)


async def _ready(p: Proc, url: str) -> None:
    import aiohttp

    async def up():
        assert p.alive(), p.output()[-2000:]
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{url}/healthz") as r:
                return r.status < 500
        except aiohttp.ClientError:
            return False

    deadline = time.monotonic() + 60
    while not await up():
        assert time.monotonic() < deadline, "hub did not start"
        await asyncio.sleep(0.2)


async def test_restart_mid_outbox_loses_nothing_and_sends_nothing_twice(tmp_path, ntfy):
    data_dir, port = tmp_path / "hub", free_port()
    url = f"http://127.0.0.1:{port}"
    h = RulesHub(None, None, url, data_dir)
    # 1. the receiver is down when the alert fires: the hub stops with it still owed
    ntfy.fail = 10**6
    p = _hub(tmp_path, data_dir, port, ntfy, 0)
    await _ready(p, url)
    await h.send("n1", [touched("/srv/conf.d/a")])
    await async_wait_for(lambda: ntfy.attempts >= 1, 60, what="a failed delivery attempt")
    # and the alert resolved (keep_firing_for: 2s): both are owed, so the next start sends them
    # as one group whatever the machine's speed (a resolve racing the restart split them)
    await async_wait_for(lambda: query(data_dir, "SELECT 1 FROM notify_outbox WHERE topic = 'resolved'"
                                                 " AND title LIKE '%srv-touched%'"), 60,
                         what="the resolved notification owed too")
    assert await asyncio.to_thread(p.terminate) == 0, p.output()[-2000:]
    owed = query(data_dir, "SELECT id, state FROM notify_outbox WHERE title LIKE '%srv-touched%'")
    assert [s for _, s in owed] == ["pending", "pending"]
    # 2. the receiver is back but slow: stopped mid-send, the hub finishes and records the send
    ntfy.fail, ntfy.delay = 0, 3.0
    p = _hub(tmp_path, data_dir, port, ntfy, 1)
    await _ready(p, url)
    await async_wait_for(lambda: ntfy.attempts >= 2, 60, what="the retried delivery in flight")
    assert await asyncio.to_thread(p.terminate) == 0, p.output()[-2000:]
    # the send in flight at SIGTERM was finished and recorded before the hub exited
    assert "[critical] srv-touched on n1\n/srv/conf.d/a modify" in told(ntfy)
    assert query(data_dir, "SELECT state FROM notify_outbox WHERE topic = 'firing'"
                 " AND body LIKE '/srv/conf.d/a%'") == [("sent",)]
    ntfy.delay = 0.0
    # 3. a third start: only news is sent, nothing again
    p = _hub(tmp_path, data_dir, port, ntfy, 2)
    await _ready(p, url)
    await h.send("n1", [touched("/srv/conf.d/b")])
    await async_wait_for(lambda: any("/srv/conf.d/b" in m["message"] for m in ntfy.messages), 60,
                         what="the notification after the restart")
    await asyncio.to_thread(p.terminate)  # the receiver answers meanwhile, in this loop
    assert told(ntfy).count("[critical] srv-touched on n1\n/srv/conf.d/a modify") == 1, ntfy.messages
    states = query(data_dir, "SELECT state, count(*) FROM notify_outbox GROUP BY state")
    assert dict(states).get("sending", 0) == 0
    import subprocess

    listed = subprocess.run([sys.executable, "-m", "hub", "notify", "list", "--state", "sent", "--data-dir",
                             str(data_dir)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "[critical] srv-touched on n1" in listed.stdout and " sent " in listed.stdout
    assert " x2 " in listed.stdout  # the one that failed once, then went out


async def test_old_sent_and_failed_rows_are_pruned_pending_ones_never(rules_hub, tmp_path, ntfy):  # noqa: F811
    from hub.notify.outbox import INSERT, target_id

    data_dir = tmp_path / "hubp"
    first = await rules_hub(data_dir=data_dir)
    old, now = time.time() - 3600, time.time()
    rows = [(old, "apprise", target_id(ntfy.url()), "firing", "warning", "n1", None, None, f"t{i}", "b", None,
             now + 86400) for i in range(4)]

    def fill(db):
        db.executemany(INSERT, rows)
        db.execute("UPDATE notify_outbox SET state = 'sent' WHERE title = 't0'")
        db.execute("UPDATE notify_outbox SET state = 'failed' WHERE title = 't1'")
        db.execute("UPDATE notify_outbox SET state = 'sent', created = ? WHERE title = 't2'", (now,))

    await _writer(first).run(fill)
    await first.runner.cleanup()
    h = await rules_hub(data_dir=data_dir, notify_urls=[ntfy.url()], event_retention=60)
    await async_wait_for(lambda: len(h.query("SELECT 1 FROM notify_outbox")) == 2, 30, what="the prune")
    assert h.query("SELECT title, state FROM notify_outbox ORDER BY title") == [("t2", "sent"), ("t3", "pending")]


async def test_notify_test_says_which_target_failed(tmp_path, ntfy, mailbox):
    import subprocess

    dead = f"ntfy://alice:hunter2secret@127.0.0.1:{free_port()}/homelab"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    env["HOMELAB_HUB_NOTIFY_URLS"] = f"{ntfy.url('phone')} {mailbox.url()} {dead}"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "hub", "notify", *args, "--data-dir", str(tmp_path / "hub")],
                              capture_output=True, text=True, timeout=120, env=env)

    r = await asyncio.to_thread(cli, "test", "--timeout", "10")
    assert r.returncode == 1 and "1 of 3 target(s) failed" in r.stderr, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"ok      ntfy://127.0.0.1:{ntfy.port}/phone"
    assert lines[1].startswith(f"ok      mailto://127.0.0.1:{mailbox.port}")
    assert lines[2].startswith(f"FAILED  ntfy://alice:****@127.0.0.1:{dead.split(':')[3].split('/')[0]}/homelab  (")
    assert "hunter2secret" not in r.stdout + r.stderr
    assert [m["topic"] for m in ntfy.messages] == ["phone"] and ntfy.messages[0]["title"] == "homelab: test notification"
    assert "Subject: homelab: test notification" in mailbox.mails[0]
    env["HOMELAB_HUB_NOTIFY_URLS"] = "ntfy://127.0.0.1:1/x bogus://nothing"
    r = await asyncio.to_thread(cli, "test")
    assert r.returncode == 1 and "notify_urls[1]: not an apprise URL apprise can use (scheme 'bogus')" in r.stderr


async def test_alertmanager_resend_covers_only_alerts_it_was_told_of(tmp_path):
    """Alertmanager forgets alerts not re-sent; a rule with notify: false never reaches it."""
    import aiohttp

    from hub.notify.deliver import Courier
    from hub.notify.outbox import Targets, alert_rows
    from hub.store import Writer

    got = []

    async def alerts_api(request):
        got.extend(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/api/v2/alerts", alerts_api)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    writer = Writer(tmp_path / "homelab.db")
    writer.start()
    t = Targets(alertmanager=f"http://127.0.0.1:{port}", generator_url="http://hub")
    now = time.time()
    base = {"key": ["n1"], "node": "n1", "state": "firing", "transition": "firing", "severity": "warning",
            "value": None, "count": 1, "first_seen": now, "last_seen": now, "firing_at": now,
            "pending_at": now, "resolved_at": None, "labels": {"alertname": "x"}, "annotations": {}, "fields": {},
            "propose": []}

    def fill(db):
        from hub.notify.outbox import INSERT
        from hub.rules import alerts

        told = {**base, "id": 1, "rule": "told", "events": []}
        quiet = {**base, "id": 2, "rule": "quiet", "notify": False, "events": []}
        alerts.apply(db, [told, quiet], [], {})
        db.executemany(INSERT, alert_rows(t, {**told, "rule_name": "told"}, now)
                       + alert_rows(t, {**quiet, "rule_name": "quiet"}, now))

    try:
        await writer.run(fill)
        courier = Courier(writer, t)
        from hub.store import connect

        courier.db = connect(writer.path, readonly=True)
        async with aiohttp.ClientSession() as s:
            await courier.resend_firing(s)
        courier.db.close()
    finally:
        await asyncio.to_thread(writer.stop)
        await runner.cleanup()
    assert [a["generatorURL"] for a in got] == ["http://hub/alerts/1"]


def test_errors_are_scrubbed_of_the_urls_secrets():
    from hub.notify.send import scrub

    url = "tgram://123456:AAF-bot-token-0123456789/987654321?from=hunter2secret"
    said = "POST https://api.telegram.org/bot123456:AAF-bot-token-0123456789/sendMessage failed (hunter2secret)"
    clean = scrub(said, url)
    assert "AAF-bot-token" not in clean and "hunter2secret" not in clean and "api.telegram.org" in clean
    assert scrub("HTTP 503 from ntfy.example.org", "ntfys://ntfy.example.org/alerts") == "HTTP 503 from ntfy.example.org"
