"""The shipped SSH brute-force rule on the real Loghub OpenSSH campaign, through a live hub:
lines parsed by the agent's log parser, posted over HTTP, evaluated on commit."""

from __future__ import annotations

import json
import re
from collections import defaultdict, deque

from rules_fixtures import rules_hub  # noqa: F401 - fixture

from agent import wire
from agent.logparse import parse_line
from hub.keys import ALERT_LISTENERS
from hub.rules.web import SERVICE
from tests.conftest import LOGHUB, async_wait_for

FAILED = re.compile(r"^Failed password for (?:invalid user )?\S* from ([0-9.]+) port")


def to_events(lines: list[str], source: str) -> list[wire.Log]:
    out = []
    for line in lines:
        p = parse_line(line)
        assert p.ts is not None and p.program, line
        out.append(wire.Log(ts=p.ts, source=source, message=p.message, program=p.program, pid=p.pid, host=p.host))
    return out


def attackers(events: list[wire.Log], threshold: int = 10, window: float = 600) -> set[str]:
    """An independent oracle: addresses with >= threshold failed passwords in any 10 minutes."""
    seen: dict[str, deque] = defaultdict(deque)
    hit = set()
    for e in events:
        m = FAILED.match(e.message) if e.program == "sshd" else None
        if not m:
            continue
        q = seen[m.group(1)]
        q.append(e.ts)
        while q[0] <= e.ts - window:
            q.popleft()
        if len(q) >= threshold:
            hit.add(m.group(1))
    return hit


def normal_day(day: str = "Dec 11") -> list[str]:
    """Office logins, sessions, one user mistyping twice, and a few stray one-off guesses."""
    lines = []
    for h in range(7, 19):
        for i, user in enumerate(("alice", "bob", "carol")):
            t = f"{day} {h:02d}:{10 + i * 7:02d}:0{i}"
            lines += [
                f"{t} gw sshd[{h * 100 + i}]: Accepted publickey for {user} from 192.168.1.{20 + i} port {40000 + h} ssh2",
                f"{t} gw sshd[{h * 100 + i}]: pam_unix(sshd:session): session opened for user {user} by (uid=0)",
            ]
        lines.append(f"{day} {h:02d}:45:00 gw CRON[{h}]: pam_unix(cron:session): session closed for user root")
        lines.append(f"{day} {h:02d}:50:13 gw sshd[{h * 7}]: Failed password for root from 198.51.100.{h} port 5{h} ssh2")
    lines += [
        f"{day} 12:00:01 gw sshd[9001]: Failed password for dave from 192.168.1.40 port 40100 ssh2",
        f"{day} 12:00:09 gw sshd[9001]: Failed password for dave from 192.168.1.40 port 40100 ssh2",
        f"{day} 12:00:15 gw sshd[9001]: Accepted password for dave from 192.168.1.40 port 40100 ssh2",
    ]
    lines.sort(key=lambda x: x[:15])
    return lines


async def test_campaign_fires_per_address_and_a_normal_day_stays_silent(rules_hub):  # noqa: F811
    h = await rules_hub()  # the shipped rules only
    proposals = []
    h.app[ALERT_LISTENERS].append(
        lambda db, a: a["transition"] == "firing" and a["rule_name"] == "ssh-brute-force" and proposals.append(a))
    campaign = to_events((LOGHUB / "OpenSSH_2k.log").read_text().splitlines(), "/var/log/auth.log")
    expected = attackers(campaign)
    assert {"183.62.140.253", "187.141.143.180", "103.99.0.122"} <= expected  # the oracle sees the campaign
    quiet = to_events(normal_day(), "/var/log/auth.log")
    assert attackers(quiet) == set()
    for i in range(0, len(campaign), 500):
        await h.send("labsz", campaign[i:i + 500])
    await h.send("gw", quiet)
    await async_wait_for(lambda: h.app[SERVICE].queue.empty(), 40, what="rules thread to drain")

    def ssh_alerts():
        return h.query("SELECT node, fields, propose, count, state FROM alerts WHERE rule = 'ssh-brute-force'")

    rows = await async_wait_for(lambda: {json.loads(r[1])["address"] for r in ssh_alerts()} == expected and ssh_alerts(),
                                40, what=f"alerts for {sorted(expected)}")
    assert {r[0] for r in rows} == {"labsz"}  # nothing from the normal day
    for _node, fields, propose, count, _state in rows:
        addr = json.loads(fields)["address"]
        assert json.loads(propose) == [{"playbook": "block-address", "params": {"address": addr, "duration": "1h"},
                                        "auto": False}]
        assert count >= 10
    # each alert links the failed-password events of its own address as evidence
    for alert_id, addr in h.query("SELECT id, json_extract(fields, '$.address') FROM alerts WHERE rule = 'ssh-brute-force'"):
        msgs = [m for (m,) in h.query("SELECT json_extract(e.data, '$.message') FROM alert_events a"
                                      " JOIN events_full e ON e.id = a.event_id WHERE a.alert_id = ?", (alert_id,))]
        assert len(msgs) >= 10 and all(f"from {addr} port" in m for m in msgs)
    # the listener (where proposals come from) heard one firing per alert, with the candidate
    assert sorted(p["propose"][0]["params"]["address"] for p in proposals) == sorted(
        json.loads(r[1])["address"] for r in rows)
