"""The hub installed in a lab node as a user installs it: the shell blocks of docs/onboarding.md
("The hub as a service") run as written, so the documented steps are the tested ones."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
from pathlib import Path

import hubwheels
import nodelab

DOC = hubwheels.REPO / "docs" / "onboarding.md"
PORT = 8470
DATA = "/var/lib/homelab"


def doc_block(name: str) -> str:
    """The ```sh block after ``<!-- lab: NAME -->`` in the docs."""
    m = re.search(rf"<!-- lab: {name} -->\n```sh\n(.*?)```", DOC.read_text(), re.S)
    if m is None:
        raise AssertionError(f"{DOC}: no sh block marked <!-- lab: {name} -->")
    return m.group(1)


def install(node: nodelab.Node, workdir: Path) -> None:
    """Steps 1-3: a wheelhouse made on the host (nodes have no internet) copied to root's home,
    then the install and configure blocks as root there, the hub's address being the node's."""
    house = hubwheels.wheelhouse(workdir / "wheelhouse", nodelab.CACHE)
    shutil.copytree(house, node.root / "root" / "wheelhouse")  # as a person would scp it
    node.sh("cd /root && set -e\n" + doc_block("install"), timeout=300)
    node.sh("set -e\n" + doc_block("configure").replace("hub.lan", node.addr), timeout=120)
    wait_answering(node)


def http_status(node: nodelab.Node, path: str = "/") -> int | None:
    """The HTTP status the hub in ``node`` answers with on its port, from the host; None if it
    does not answer."""
    conn = http.client.HTTPConnection(node.addr, PORT, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def wait_answering(node: nodelab.Node, timeout: float = 90) -> None:
    def answers() -> bool:
        status = http_status(node)
        return status is not None and status < 500
    try:
        nodelab.poll(answers, timeout, what=f"the hub in {node.name} to answer on {node.addr}:{PORT}")
    except AssertionError as e:
        raise AssertionError(f"{e}; its journal:\n{node.journal('homelab-hub', 60)}") from None


def cli(node: nodelab.Node, args: str, **kw):
    """``homelab-hub ARGS`` on the hub node, run as step 3 says (the alias, its environment)."""
    setup = "\n".join(ln for ln in doc_block("configure").splitlines()
                      if ln.startswith(("export ", "alias ")))
    return node.sh(f"{setup}\nhomelab-hub {args}", **kw)


def query(node: nodelab.Node, sql: str) -> list:
    """Rows from the hub's database, read-only, with the hub's own Python inside the node."""
    code = ("import json, sqlite3, sys; db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True, timeout=10); "
            "print(json.dumps(db.execute(sys.argv[2]).fetchall()))")
    r = node.sh(f"/opt/homelab/bin/python -c \"{code}\" {DATA}/homelab.db \"{sql}\"")
    return json.loads(r.stdout)


def exposure(node: nodelab.Node, unit: str = "homelab-hub.service") -> tuple[float, str]:
    """``systemd-analyze security UNIT`` measured live in the node: (exposure, full table)."""
    out = node.sh(f"systemd-analyze security --no-pager {unit}", check=False).stdout
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    if m is None:
        raise AssertionError(f"no exposure figure in:\n{out}")
    return float(m.group(1)), out


@contextlib.contextmanager
def journal_on_failure(node: nodelab.Node):
    """On a failure, the hub's own log (what its unit did to it) goes with the report."""
    try:
        yield
    except BaseException:
        import sys
        sys.stderr.write(f"\n--- {node.name}: journalctl -u homelab-hub ---\n{node.journal('homelab-hub', 150)}\n")
        raise
