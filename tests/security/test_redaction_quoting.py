"""Finding 15: values of password/secret/token options and assignments are redacted whatever
their quoting, including a quoted command whose output is the secret, and inside nested
commands; references ($VAR, $(pass show x)) are still kept. Also run over the existing case
list (tests/agent/test_redact.py) wrapped in sh -c / ssh, so nesting costs nothing there."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from agent.redact import MASK, redact

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
from test_redact import CASES  # noqa: E402

S = "Zq8-Secr3t-value"

LEAKS = [
    f'./tool --password "$(echo {S})"',
    f"./tool --password \"$(printf '%s' '{S}')\"",
    f"./tool --password=$(echo {S}) --verbose",
    f"./tool --token `echo {S}`",
    f"./tool --password $'{S}'",
    f"./tool --password=$'{S}\\n'",
    f'./tool --password=$"{S}"',
    f"./tool --secret='{S} x'ab",
    f"./tool --api-key \"pre\"'{S}'",
    f"sh -c \"./tool --password=\\\"{S}\\\" --x\"",
    f"sh -c \"./tool --password=\\\"{S} two\\\" --x\"",
    f"sudo -u app bash -c 'DB_PASSWORD=\"$(echo {S})\" ./migrate'",
    f"ssh web1 \"mysql --password='{S}' -e 'select 1'\"",
    f"export BORG_PASSCOMMAND='echo {S}'",
    f"BORG_PASSCOMMAND=\"printf {S}\" borg list",
    f"./tool --password-command 'echo {S}'",
    f"DB_PASSWORD=\"$(cat <<< {S})\" ./run",
    f"export API_TOKEN=\"$(echo -n '{S}')\"",
]

KEPT = [
    "./tool --password \"$(pass show lab/db)\"",
    "./tool --password=$(cat /etc/app/pw)",
    "./tool --password \"$DB_PASSWORD\"",
    "./tool --password=${PW}",
    "export BORG_PASSCOMMAND='pass show borg'",
    "./tool --password-file /etc/app/pw",
    "./tool --token \"$(vault kv get -field=token secret/app)\"",
]


@pytest.mark.parametrize("command", LEAKS)
def test_secret_values_go_whatever_the_quoting(command):
    out, changed = redact(command)
    assert S not in out and "Secr3t" not in out and changed, (command, out)
    assert MASK in out


@pytest.mark.parametrize("command", KEPT)
def test_references_are_kept(command):
    assert redact(command) == (command, False)


@pytest.mark.parametrize("wrap", ["sh -c {q}", "ssh backup-host {q}", "sudo bash -c {q}"])
def test_the_existing_cases_survive_nesting(wrap):
    leaked = []
    for command, secrets, _kept in CASES:
        nested = wrap.format(q=shlex.quote(command))
        out, _ = redact(nested)
        leaked += [(nested, s) for s in secrets if s in out]
    assert not leaked, leaked[:5]
