"""journald on a real node: lines written by real units reach the hub exactly once, with the
agent's cursor kept across `systemctl restart homelab-agent`, `kill -9` of the agent (the unit's
Restart=always brings it back; killed the moment a batch is in its spool, and in the middle of a
unit's stream of lines) and a reboot of the whole machine."""

from __future__ import annotations

from nodelab import poll


def talk(node, batch: str, n: int = 5) -> list[str]:
    """n lines from a transient unit of its own (a real unit, not a command run by the test)."""
    lines = [f"lab-{node.name}-{batch}-{i}" for i in range(n)]
    node.sh(f"systemd-run --quiet --wait --unit=talker-{batch} -p Type=oneshot /bin/sh -c "
            f"'for l in {' '.join(lines)}; do echo $l; done'")
    return lines


def counts(hub, node: str, batch: str) -> dict[str, int]:
    rows = hub.query("SELECT message, unit FROM logs WHERE node = ? AND message LIKE ?",
                     (node, f"lab-{node}-{batch}-%"))
    out: dict[str, int] = {}
    for message, unit in rows:
        assert unit == f"talker-{batch}.service", (message, unit)
        out[message] = out.get(message, 0) + 1
    return out


def arrived(hub, node, batch, lines):
    c = counts(hub, node.name, batch)
    return len(c) == len(lines) and c


def spooled(node, message: str) -> bool:
    """The agent has this line in its spool (on disk, in the transaction with its cursor)."""
    r = node.sh("python3 -c 'import sqlite3, sys; db = sqlite3.connect(sys.argv[1], timeout=10); "
                "print(db.execute(\"SELECT count(*) FROM spool WHERE instr(data, cast(? AS BLOB))\", "
                "(sys.argv[2],)).fetchone()[0])' /var/lib/homelab-agent/spool.db " + message, check=False)
    return r.stdout.strip() not in ("", "0")


def kill9(node) -> None:
    """SIGKILL the agent (its journal reader with it) and wait for Restart=always's new one."""
    before = agent_pid(node)
    node.sh("systemctl kill --signal=KILL homelab-agent")
    poll(lambda: (p := agent_pid(node)) not in (0, before) and p, 60,
         what="systemd to restart the killed agent")


def agent_pid(node) -> int:
    return int(node.sh("systemctl show -p MainPID --value homelab-agent").stdout.strip())


def test_journal_lines_arrive_once_across_restart_kill9_and_reboot(lab, enrolled):
    node = enrolled()
    hub = lab.hub
    sent: dict[str, list[str]] = {}
    # the first start follows from the end of the journal: wait until it is following
    ready = iter(range(1000))
    poll(lambda: node.sh(f"systemd-cat -t lab-ready echo ready-{next(ready)}") and hub.query(
        "SELECT 1 FROM logs WHERE node = ? AND program = 'lab-ready'", (node.name,)), 90, interval=2,
        what="the agent to follow the journal")

    sent["a"] = talk(node, "a")
    poll(lambda: arrived(hub, node, "a", sent["a"]), 90, what="batch a in the hub's logs")

    # restart: lines just before it and while it is down are read from the saved cursor
    sent["b"] = talk(node, "b")
    node.sh("systemctl stop homelab-agent")
    sent["c"] = talk(node, "c")
    node.sh("systemctl start homelab-agent")
    sent["d"] = talk(node, "d")
    for b in "bcd":
        poll(lambda b=b: arrived(hub, node, b, sent[b]), 90, what=f"batch {b} after the restart")

    # kill -9: no clean exit; Restart=always starts a new agent.
    # Killed the moment batch d2 is in the spool (the cursor is stored in the same transaction,
    # so there is no window in which a line is spooled and its cursor not yet saved) ...
    sent["d2"] = talk(node, "d2")
    poll(lambda: spooled(node, sent["d2"][-1]), 60, interval=0.1, what="batch d2 in the agent's spool")
    kill9(node)
    sent["e"] = talk(node, "e")
    # ... and in the middle of a unit's stream of lines, some read and spooled, some not yet
    lines = [f"lab-{node.name}-f-{i}" for i in range(30)]
    node.sh(f"systemd-run --quiet --no-block --unit=talker-f -p Type=oneshot /bin/sh -c "
            f"'for l in {' '.join(lines)}; do echo $l; sleep 0.1; done'")
    sent["f"] = lines
    poll(lambda: spooled(node, lines[5]), 60, interval=0.1, what="the first lines of batch f spooled")
    kill9(node)
    for b in ("d2", "e", "f"):
        poll(lambda b=b: arrived(hub, node, b, sent[b]), 90, what=f"batch {b} after kill -9")

    # reboot: the journal is persistent (/var/log/journal), the cursor is in the state directory
    sent["g"] = talk(node, "g")
    node.reboot()
    assert node.boots == 2
    sent["h"] = talk(node, "h")
    for b in "gh":
        poll(lambda b=b: arrived(hub, node, b, sent[b]), 120, what=f"batch {b} after the reboot")

    # exactly once: a repeat would show as a count of 2 (the hub stores every event it is sent)
    for b, lines in sent.items():
        c = counts(hub, node.name, b)
        assert c == {line: 1 for line in lines}, (b, c)
    # and the agent came up from its own unit each time, never by hand
    assert node.sh("systemctl is-enabled homelab-agent").stdout.strip() == "enabled"
