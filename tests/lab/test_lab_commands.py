"""Commands typed by a non-root user in a real login shell, on a pseudo-terminal, reach the hub
through the hook the bootstrap installed and the socket the unit provides; the user comes from
the kernel, and secrets are redacted on the node."""

from __future__ import annotations

from nodelab import poll

SECRET = "s3cr3t-Hunter2-value"


def test_non_root_login_shell_commands_reach_hub_redacted(lab, enrolled):
    node = enrolled()
    hub = lab.hub
    node.sh("useradd --create-home --shell /bin/bash alice")
    # what the bootstrap set up, as a user would find it
    assert node.sh("stat -c %a /run/homelab-agent").stdout.strip() == "755"
    assert node.sh("stat -c %a /var/lib/homelab-agent").stdout.strip() == "700"
    screen = node.login_shell("alice", [
        "whoami",
        "echo lab-hello-from-alice",
        f"export API_TOKEN={SECRET}",
        f"mysql -u app -p{SECRET} -e 'select 1' || true",
    ])
    assert "alice" in screen, screen

    def rows():
        return hub.query("SELECT user, command, redacted, tty, shell FROM commands WHERE node = ? AND user = 'alice'",
                         (node.name,))

    typed = ("echo lab-hello-from-alice", "export API_TOKEN=", "mysql -u app")
    poll(lambda: all(any(r[1].startswith(t) for r in rows()) for t in typed), 90,
         what="alice's commands in the hub")
    got = {r[1]: r for r in rows()}
    assert "echo lab-hello-from-alice" in got, got
    user, _, redacted, tty, shell = got["echo lab-hello-from-alice"]
    assert (user, redacted, shell) == ("alice", 0, "bash")
    assert tty and tty.startswith("/dev/pts/"), tty
    secret_rows = [r for r in rows() if "API_TOKEN" in r[1] or "mysql" in r[1]]
    assert len(secret_rows) == 2, rows()
    for r in secret_rows:
        assert r[2] == 1 and "[REDACTED]" in r[1] and SECRET not in r[1], r
    # the secret is nowhere on the hub: not in the typed table, not in the raw events
    assert hub.query("SELECT count(*) FROM events WHERE data LIKE ?", (f"%{SECRET}%",))[0][0] == 0
    # and alice cannot pretend to be root: the user is the kernel's, not the datagram's
    node.sh("logger -u /run/homelab-agent/commands.sock --socket-errors=on -t homelab-cmd -- "
            "\"$(printf 'HLC1\\0370\\037\\037\\037\\037bash\\037/\\037lab-forged-by-alice')\"", user="alice")
    forged = poll(lambda: hub.query("SELECT user FROM commands WHERE node = ? AND command = 'lab-forged-by-alice'",
                                    (node.name,)), 60, what="the datagram alice sent by hand")
    assert forged == [("alice",)]
