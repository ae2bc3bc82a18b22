"""The shipped units are valid (systemd-analyze verify), hardened, and explain themselves."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", ["homelab-agent.service", "homelab-hub.service"])
def test_systemd_analyze_verify(tmp_path, name):
    # verify checks that ExecStart exists: point it at this environment's console scripts
    bindir = Path(sys.executable).parent
    text = (UNITS / name).read_text()
    prefix = "/opt/homelab-agent/bin" if "agent" in name else "/opt/homelab/bin"
    assert prefix in text
    (tmp_path / name).write_text(text.replace(prefix, str(bindir)))
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


@pytest.mark.parametrize("name,required", [
    ("homelab-agent.service", ["ProtectSystem=strict", "NoNewPrivileges=yes", "StateDirectory=homelab-agent",
                               "MemoryMax=", "RestrictAddressFamilies=", "CapabilityBoundingSet="]),
    ("homelab-hub.service", ["User=homelab", "RemoveIPC=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n",
                             "PrivateDevices=yes", "StateDirectory=homelab"]),
])
def test_units_are_hardened_and_every_option_is_explained(name, required):
    text = (UNITS / name).read_text()
    for option in required:
        assert option in text, f"{name} lacks {option.strip()}"
    # every hardening block is preceded by a comment saying why
    lines = text.splitlines()
    service = lines[lines.index("[Service]") + 1: lines.index("[Install]")]
    blocks, current = [], []
    for line in service:
        if not line.strip():
            if current:
                blocks.append(current)
            current = []
        else:
            current.append(line)
    if current:
        blocks.append(current)
    for b in blocks[1:]:
        assert b[0].startswith("#"), f"{name}: block starting {b[0]!r} has no comment saying why"


def test_agent_sees_the_nodes_own_tmp():
    """tmp-growing needs the files collector to watch the node's /tmp and /var/tmp: with
    PrivateTmp= it watched the agent's own empty ones and never fired (tests/lab)."""
    from hub.onboarding import script

    for text in ((UNITS / "homelab-agent.service").read_text(), script.agent_unit()):
        assert not [ln for ln in text.splitlines() if ln.startswith("PrivateTmp=")], text
