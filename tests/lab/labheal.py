"""Small helpers the heal scenarios share: wait for a proposal, approve it as a person does and
wait for the hub's verdict; build a .deb inside a node (kept out of nodelab.py, which is the
machines, not the scenarios)."""

from __future__ import annotations

import fcntl
import json
import subprocess
from pathlib import Path

import pytest
from nodelab import CACHE, poll

ENDED = ("verified", "not verified", "failed", "diagnosed")


def mark(node, hub, path: str) -> None:
    """Create a lab rule's marker file once the agent watches /etc: its first baseline reached
    the hub. A marker made earlier joins that baseline and is never an event (seen when the
    machine was busy and the agent slow to start)."""
    poll(lambda: hub.query("SELECT 1 FROM files WHERE node = ? AND path LIKE '/etc/%' LIMIT 1", (node.name,)), 120,
         what=f"the agent on {node.name} to watch /etc")
    node.sh(f"touch {path}")


def proposed(hub, node: str, playbook: str, timeout: float = 120) -> int:
    """The id of the newest proposal of ``playbook`` for ``node`` waiting for a person."""
    rows = poll(lambda: hub.query("SELECT id FROM proposals WHERE node = ? AND playbook = ? AND state = 'proposed'"
                                  " ORDER BY id DESC", (node, playbook)), timeout,
                what=f"a {playbook} proposal on {node}")
    return rows[0][0]


def state(hub, pid: int) -> str:
    return hub.query("SELECT state FROM proposals WHERE id = ?", (pid,))[0][0]


def show(hub, pid: int) -> dict:
    return json.loads(hub.cli("proposals", "show", str(pid), "--json").stdout)


def approve_and_wait(hub, pid: int, until: tuple[str, ...] = ENDED, timeout: float = 300) -> dict:
    """``homelab-hub approve ID --yes``, then the proposal once it reaches one of ``until``."""
    hub.cli("approve", str(pid), "--yes")
    try:
        poll(lambda: state(hub, pid) in until, timeout, what=f"proposal {pid} to reach one of {until}")
    except AssertionError as e:  # say where it stuck: the history, the jobs and their states
        raise AssertionError(f"{e}\n{hub.cli('proposals', 'show', str(pid), check=False).stdout[-6000:]}") from None
    return show(hub, pid)


def run_output(detail: dict) -> str:
    return next(j for j in detail["jobs"] if j["mode"] == "run")["output"]


def playbook(node, name: str, mode: str, check: bool = False, **params: str):
    """Run a shipped playbook's ``mode`` (check, verify) by hand inside the node, as its job
    would: what it says before the hub sends the fix."""
    text = (Path(__file__).resolve().parents[2] / "playbooks" / f"{name}.sh").read_text()
    node.write(f"/root/{name}.sh", text)
    env = " ".join(f"PARAM_{k.upper()}='{v}'" for k, v in params.items())
    return node.sh(f"{env} bash /root/{name}.sh {mode}", check=check)


def build_deb(node, name: str, version: str, depends: str = "") -> str:
    """A tiny architecture-all package built with dpkg-deb inside the node; returns its path."""
    root = f"/root/debs/{name}-{version}"
    control = (f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
               "Maintainer: Lab <lab@example.invalid>\n"
               + (f"Depends: {depends}\n" if depends else "")
               + f"Description: {name}, built in the node lab\n")
    node.sh(f"mkdir -p {root}/DEBIAN {root}/usr/share/{name}")
    node.write(f"{root}/DEBIAN/control", control)
    deb = f"/root/debs/{name}_{version}_all.deb"
    node.sh(f"echo {name} {version} > {root}/usr/share/{name}/VERSION && "
            f"dpkg-deb --root-owner-group --build {root} {deb} >/dev/null")
    return deb


def security_repo(node, debs: list[str], where: str = "/srv/lab-security") -> None:
    """A flat file: apt repository whose Release says Debian-Security, as the security archive
    does, holding ``debs``; the node's only source (lab nodes have no internet), lists updated."""
    node.sh(f"mkdir -p {where} && cp {' '.join(debs)} {where}/ && cd {where} && : > Packages && "
            "for d in *.deb; do dpkg-deb -f $d; echo \"Filename: ./$d\"; echo \"Size: $(stat -c %s $d)\"; "
            "echo \"SHA256: $(sha256sum $d | cut -d ' ' -f 1)\"; echo; done >> Packages && "
            "{ echo 'Origin: Debian'; echo 'Label: Debian-Security'; echo 'Suite: bookworm-security';"
            "  echo 'Codename: bookworm-security'; echo \"Date: $(date -Ru)\"; echo 'SHA256:';"
            "  echo \" $(sha256sum Packages | cut -d ' ' -f 1) $(stat -c %s Packages) Packages\"; } > Release")
    node.sh(f"rm -f /etc/apt/sources.list.d/*.sources /etc/apt/sources.list && "
            f"echo 'deb [trusted=yes] file:{where} ./' > /etc/apt/sources.list.d/lab-security.list && "
            "apt-get update -q", timeout=120)


def install_host_debs(node, names: list[str]) -> None:
    """Install packages the node image lacks (logrotate) from .debs the host's apt downloads
    once into the lab cache (the nodes have no network). Skips the test when it cannot."""
    where = CACHE / "debs"
    where.mkdir(parents=True, exist_ok=True)
    with open(where / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [n for n in names if not list(where.glob(f"{n}_*.deb"))]
        if missing:
            r = subprocess.run(["apt-get", "download", "-q", *missing], cwd=where, capture_output=True,
                               text=True, timeout=120)
            if r.returncode != 0:
                pytest.skip(f"cannot download {missing} on the host: {r.stderr.strip()[-300:]}")
    debs = [next(where.glob(f"{n}_*.deb")) for n in names]
    for deb in debs:
        subprocess.run(node.enter_argv() + ["/bin/sh", "-c", f"cat > /root/{deb.name}"], input=deb.read_bytes(),
                       check=True, timeout=60)
    node.sh("dpkg -i " + " ".join(f"/root/{d.name}" for d in debs), timeout=120)
