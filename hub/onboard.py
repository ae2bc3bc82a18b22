"""One-command onboarding: what the hub serves to a new machine so it needs no internet.

The hub builds, once per version, the agent's own wheel (``pip wheel --no-deps`` of this
project) and a wheelhouse of the agent's dependencies (``pip wheel`` from the hub's pip
cache, the index, or a local ``wheelhouse`` directory), plus pip itself so the node's
virtualenv needs neither ensurepip nor an index. ``bootstrap.sh`` is rendered per join
token; it downloads those files from the hub, checks their SHA-256, creates the venv,
joins, installs ``homelab-agent.service`` and starts the agent. Re-running it is harmless.

Only holders of a join token (until it expires) may download anything here.
"""

from __future__ import annotations

import email.parser
import fcntl
import hashlib
import json
import logging
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from agent import __version__

from . import paths
from .auth import hash_secret
from .errors import HubError, Unauthorized

log = logging.getLogger(__name__)

# Requirements of the project that only the hub uses; the node's venv skips them.
HUB_ONLY = {"datasette", "sqlite-utils", "rich", "jsonschema", "prometheus-client", "tailscale",
            "llama-cpp-python"}
WHEEL_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+\.whl$")
SOURCE_PARTS = ("agent", "hub", "pyproject.toml", "README.md", "playbooks", "systemd", "rules", "datasette")


class BuildError(HubError):
    status = 503


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def token_node(db: sqlite3.Connection, token: str) -> str:
    """The node a join token belongs to, if it may still download the bootstrap files.

    A used token keeps working for downloads until it expires, so re-running the same
    one-liner is harmless (the script does not join twice)."""
    if not isinstance(token, str) or not token.startswith("hlj_") or len(token) > 200:
        raise Unauthorized("missing or malformed join token")
    row = db.execute("SELECT node, expires FROM join_tokens WHERE token_hash = ?",
                     (hash_secret(token),)).fetchone()
    if row is None:
        raise Unauthorized("unknown join token")
    if row[1] < time.time():
        raise Unauthorized("join token expired: run `homelab-hub enroll NAME` again")
    return row[0]


# -- artifacts -----------------------------------------------------------------------------


class Artifacts:
    """The files under ``<bootstrap_dir>/<version>/``: the agent wheel, ``wheelhouse/`` and
    ``index.json`` (name -> sha256 of every file a node downloads)."""

    def __init__(self, base: Path, find_links: Path | None = None):
        py = f"py{sys.version_info[0]}{sys.version_info[1]}"
        # keyed by the code too, so a changed checkout never serves a stale wheel
        self.dir = Path(base) / f"{__version__}-{py}-{source_digest()[:12]}"
        self.find_links = find_links

    @property
    def index_path(self) -> Path:
        return self.dir / "index.json"

    def index(self) -> dict:
        return json.loads(self.index_path.read_text())

    def ready(self) -> bool:
        return self.index_path.exists()

    def path_of(self, name: str) -> Path:
        """A file listed in the index (anything else is refused: no path tricks)."""
        idx = self.index()
        if name == idx["agent_wheel"]:
            return self.dir / name
        if WHEEL_NAME_RE.match(name) and name in idx["wheelhouse"]:
            return self.dir / "wheelhouse" / name
        raise KeyError(name)

    def ensure(self) -> dict:
        """Build what is missing (blocking; minutes the first time). Safe across processes."""
        if self.ready():
            return self.index()
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir.parent / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.ready():
                self._build()
        return self.index()

    def _pip(self, *args: str, cwd: Path | None = None) -> None:
        argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=1800, cwd=cwd)
        if r.returncode != 0:
            raise BuildError(f"`{' '.join(argv[2:6])} ...` failed: {r.stderr.strip()[-1500:]}")

    def _build(self) -> None:
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=self.dir.parent))
        try:
            wheel = self._agent_wheel(work)
            reqs = agent_requirements(wheel)
            house = work / "wheelhouse"
            house.mkdir()
            links = ["--find-links", str(self.find_links)] if self.find_links else []
            self._pip("wheel", "-q", "-w", str(house), *links, "pip", *reqs)
            (house / "requirements.txt").write_text("\n".join(reqs) + "\n")
            wheels = sorted(p.name for p in house.glob("*.whl"))
            idx = {
                "version": __version__,
                "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
                "agent_wheel": wheel.name,
                "requirements": reqs,
                "files": {wheel.name: sha256_of(wheel),
                          **{n: sha256_of(house / n) for n in wheels}},
                "wheelhouse": wheels,
            }
            final_house = self.dir / "wheelhouse"
            if final_house.exists():
                shutil.rmtree(final_house)
            shutil.move(str(house), final_house)
            shutil.move(str(wheel), self.dir / wheel.name)
            tmp = self.dir / "index.json.tmp"
            tmp.write_text(json.dumps(idx, indent=2, sort_keys=True))
            tmp.replace(self.index_path)  # last: its presence means "complete"
            for old in self.dir.parent.iterdir():  # builds of older code: never served again
                if old.is_dir() and old != self.dir and not old.name.startswith("."):
                    shutil.rmtree(old, ignore_errors=True)
            log.info("bootstrap artifacts for %s ready in %s (%d wheels)", __version__, self.dir, len(wheels))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _agent_wheel(self, work: Path) -> Path:
        """``pip wheel --no-deps`` of this project, from a copy so the tree stays clean."""
        repo = paths.REPO
        if not (repo / "pyproject.toml").exists():
            raise BuildError(
                f"no project source at {repo} to build the agent wheel from; put a built "
                f"sentient_homelab-{__version__}-*.whl into the `wheelhouse` directory setting")
        src = work / "src"
        src.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for part in SOURCE_PARTS:
            p = repo / part
            if p.is_dir():
                shutil.copytree(p, src / part, ignore=ignore)
            elif p.is_file():
                shutil.copy2(p, src / part)
        out = work / "dist"
        prebuilt = sorted(self.find_links.glob(f"sentient_homelab-{__version__}-*.whl")) if self.find_links else []
        if prebuilt:
            out.mkdir()
            shutil.copy2(prebuilt[-1], out / prebuilt[-1].name)
        else:
            try:
                self._pip("wheel", "-q", "--no-deps", "-w", str(out), str(src))
            except BuildError:
                # offline, no cached setuptools for an isolated build: use the hub's own
                self._pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src))
        (wheel,) = out.glob("*.whl")
        return wheel


def source_digest() -> str:
    """SHA-256 over what nodes run: the agent package, pyproject, shipped playbooks/units."""
    h = hashlib.sha256()
    roots = [Path(__file__).resolve().parent.parent / "agent", paths.REPO / "pyproject.toml",
             paths.shipped("playbooks"), paths.shipped("systemd")]
    for root in roots:
        files = sorted(root.rglob("*")) if root.is_dir() else [root] if root.is_file() else []
        for f in files:
            if f.is_file() and f.suffix != ".pyc" and "__pycache__" not in f.parts:
                h.update(f.as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def agent_requirements(wheel: Path) -> list[str]:
    """The wheel's own Requires-Dist, minus extras and what only the hub needs."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(z.read(meta).decode())
    reqs = []
    for r in msg.get_all("Requires-Dist") or []:
        if "extra ==" in r:
            continue
        name = re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0]
        if _norm(name) not in HUB_ONLY:
            reqs.append(r.strip())
    return sorted(reqs, key=str.lower)


def one_liner(hub_url: str, token: str, settings=None) -> str:
    """The command `enroll` prints for a new machine. Without -f, curl hands a refusal's
    body (itself a script that prints the reason and exits 1) to sh. With the hub's own
    TLS certificate, curl pins its public key (-k only skips the CA check)."""
    url = f"{hub_url.rstrip('/')}/bootstrap.sh?token={token}"
    pin = ""
    if settings is not None and getattr(settings, "tls", False):
        pin = f" -k --pinnedpubkey 'sha256//{spki_pin(settings.data_dir)}'"
    return f"curl -sSL{pin} '{url}' | sh"


def spki_pin(data_dir: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the hub's certificate: curl's --pinnedpubkey."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from . import tls

    cert = x509.load_pem_x509_certificate(tls.ensure_cert(data_dir).read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


# -- the script -----------------------------------------------------------------------------


def agent_unit() -> str:
    """homelab-agent.service with @APP@ and @STATE@ for the script to fill in. The shipped
    (hardened) unit wins when present; its ExecStart is pointed at the node's venv."""
    shipped = paths.shipped("systemd") / "homelab-agent.service"
    exec_start = "ExecStart=@APP@/bin/homelab-agent run"
    env = "Environment=HOMELAB_AGENT_STATE_DIR=@STATE@"
    if shipped.is_file():
        lines = []
        for line in shipped.read_text().splitlines():
            if line.startswith("ExecStart="):
                line = exec_start
            elif line.startswith("Environment=HOMELAB_AGENT_STATE_DIR="):
                line = env
            lines.append(line)
        return "\n".join(lines) + "\n"
    return (
        "[Unit]\n"
        "Description=Sentient Homelab agent\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n\n"
        "[Service]\n"
        f"{exec_start}\n"
        f"{env}\n"
        "Restart=always\n"
        "RestartSec=5\n"
        "Nice=10\n"
        "MemoryMax=256M\n"
        "NoNewPrivileges=yes\n"
        "ProtectHome=read-only\n"
        "PrivateTmp=yes\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def render_script(hub_url: str, token: str, node: str, index: dict, fingerprint: str = "") -> str:
    """The install script for one token. ``fingerprint`` (SHA256:hex of the hub's own TLS
    certificate) makes every download and the join pin that certificate."""
    values = {
        "@HUB@": hub_url.rstrip("/"), "@TOKEN@": token, "@NODE@": node, "@FPR@": fingerprint,
        "@VERSION@": index["version"], "@PYVER@": index["python"],
        "@WHEEL@": index["agent_wheel"],
    }
    for k, v in values.items():
        if "'" in v or "\\" in v:  # every value sits in single quotes in the script
            raise ValueError(f"{k} contains a quote")
    out = SCRIPT
    for k, v in values.items():
        out = out.replace(k, v)
    # last, so placeholders inside the unit (@APP@, @STATE@) are left for the node to fill
    return out.replace("@UNIT_JSON@", json.dumps(agent_unit()))


def error_script(message: str) -> str:
    """What /bootstrap.sh answers on refusal: piped into sh, it says why and fails."""
    safe = message.replace("'", "")
    return f"#!/bin/sh\necho 'homelab bootstrap: {safe}' >&2\nexit 1\n"


SCRIPT = r"""#!/bin/sh
# Sentient Homelab agent bootstrap for node '@NODE@', served by the hub at @HUB@.
# Everything comes from the hub (no internet needed). Re-running it is harmless.
# Options: --prefix DIR (install under DIR; implies --no-systemd), --no-systemd
# (start the agent in the background with a pid file), --python PATH (python >= @PYVER@).
set -eu
HUB='@HUB@'
TOKEN='@TOKEN@'
WHEEL='@WHEEL@'
FPR='@FPR@'
PREFIX=${HOMELAB_PREFIX:-}
SYSTEMD=${HOMELAB_SYSTEMD:-auto}
PY=${HOMELAB_PYTHON:-python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#--prefix=}; shift ;;
    --no-systemd) SYSTEMD=no; shift ;;
    --python) PY=$2; shift 2 ;;
    *) echo "homelab bootstrap: unknown option $1" >&2; exit 2 ;;
  esac
done
PREFIX=${PREFIX%/}
APP="$PREFIX/opt/homelab-agent"
HOUSE="$PREFIX/var/cache/homelab-agent/wheelhouse"
STATE="$PREFIX/var/lib/homelab-agent"
UNIT="$PREFIX/etc/systemd/system/homelab-agent.service"
say() { echo "homelab bootstrap: $*" >&2; }
die() { say "$*"; exit 1; }

command -v "$PY" >/dev/null 2>&1 || die "needs $PY (Python @PYVER@) on this machine"
"$PY" -c 'import sys; v = "@PYVER@".split("."); sys.exit(list(sys.version_info[:2]) != [int(x) for x in v])' \
  || die "the hub's wheels are for Python @PYVER@; run with --python /path/to/python@PYVER@"
umask 077
mkdir -p "$HOUSE" "$STATE" "$(dirname "$UNIT")"

say "downloading the agent @VERSION@ and its dependencies from $HUB"
"$PY" - "$HUB" "$TOKEN" "$HOUSE" "$FPR" <<'PYEOF'
import hashlib, http.client, json, os, ssl, sys, urllib.parse
hub, token, house, fpr = sys.argv[1:5]
u = urllib.parse.urlsplit(hub)
q = "?token=" + urllib.parse.quote(token)
def get(path):
    try:
        if u.scheme == "https":
            ctx = ssl.create_default_context()
            if fpr:  # the hub's own certificate: pinned below instead of a CA
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            c = http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=1800, context=ctx)
        else:
            c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=1800)
        c.connect()
        if fpr and "SHA256:" + hashlib.sha256(c.sock.getpeercert(True)).hexdigest() != fpr:
            sys.exit(f"homelab bootstrap: {hub}: certificate does not match the pinned {fpr}")
        c.request("GET", u.path.rstrip("/") + path + q)
        r = c.getresponse()
        body = r.read()
    except OSError as e:
        sys.exit(f"homelab bootstrap: {hub}{path}: {e}")
    if r.status != 200:
        sys.exit(f"homelab bootstrap: {hub}{path}: {r.status} {body[:300].decode(errors='replace')}")
    return body
index = json.loads(get("/bootstrap/index.json"))
for name, digest in sorted(index["files"].items()):
    dest = os.path.join(house, name)
    if os.path.exists(dest) and hashlib.sha256(open(dest, "rb").read()).hexdigest() == digest:
        continue
    data = get("/bootstrap/files/" + urllib.parse.quote(name))
    if hashlib.sha256(data).hexdigest() != digest:
        sys.exit(f"homelab bootstrap: {name}: checksum mismatch")
    with open(dest + ".part", "wb") as f:
        f.write(data)
    os.replace(dest + ".part", dest)
with open(os.path.join(house, "requirements.txt"), "w") as f:
    f.write("\n".join(index["requirements"]) + "\n")
PYEOF

# The venv is /opt/homelab-agent itself, where systemd/homelab-agent.service expects it.
if [ ! -x "$APP/bin/python" ]; then
  "$PY" -m venv --without-pip "$APP"
fi
if [ ! -x "$APP/bin/pip" ]; then  # pip from its own wheel: no ensurepip, no index
  set -- "$HOUSE"/pip-*.whl
  "$APP/bin/python" "$1/pip" install -q --no-index --disable-pip-version-check --find-links "$HOUSE" pip </dev/null
fi
PIP="$APP/bin/pip"
"$PIP" install -q --no-index --disable-pip-version-check --find-links "$HOUSE" -r "$HOUSE/requirements.txt" </dev/null
"$PIP" install -q --no-index --disable-pip-version-check --no-deps "$HOUSE/$WHEEL" </dev/null
AGENT="$APP/bin/homelab-agent"

if [ -s "$STATE/credential" ] && grep -qF "hub_url = \"$HUB\"" "$STATE/agent.toml" 2>/dev/null; then
  say "already joined $HUB; keeping the existing credential"
else
  if [ -n "$FPR" ]; then
    "$AGENT" join "$HUB" "$TOKEN" --state-dir "$STATE" --fingerprint "$FPR" </dev/null
  else
    "$AGENT" join "$HUB" "$TOKEN" --state-dir "$STATE" </dev/null
  fi
fi

"$PY" - "$UNIT" "$APP" "$STATE" <<'PYEOF'
import os, sys
unit, app, state = sys.argv[1:4]
text = @UNIT_JSON@
with open(unit + ".tmp", "w") as f:
    f.write(text.replace("@" + "APP@", app).replace("@" + "STATE@", state))
os.chmod(unit + ".tmp", 0o644)
os.replace(unit + ".tmp", unit)
PYEOF

if [ "$SYSTEMD" = auto ]; then
  if [ -z "$PREFIX" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    SYSTEMD=yes
  else
    SYSTEMD=no
  fi
fi
if [ "$SYSTEMD" = yes ]; then
  systemctl daemon-reload
  systemctl enable homelab-agent.service
  systemctl restart homelab-agent.service
  say "homelab-agent.service enabled and (re)started"
else
  PIDFILE="$STATE/agent.pid"
  if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    say "agent already running (pid $(cat "$PIDFILE")); unit file written to $UNIT"
  else
    nohup "$AGENT" run --state-dir "$STATE" >>"$STATE/agent.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    say "agent started in the background (pid $!, log $STATE/agent.log); unit file written to $UNIT"
  fi
fi
say "done: this machine reports to $HUB"
"""
