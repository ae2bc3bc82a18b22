"""The bootstrap script a new machine runs, rendered per join token (see hub/onboarding/bundle.py for
what it downloads and docs/onboarding.md for its options)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from pathlib import Path
from urllib.parse import urlsplit

from hub import paths

TAILNET_V4 = ipaddress.ip_network("100.64.0.0/10")
TAILNET_V6 = ipaddress.ip_network("fd7a:115c:a1e0::/48")


def plain_http_risk(hub_url: str) -> str | None:
    """Why printing a join command for ``hub_url`` is unsafe, or None. HTTPS is pinned by the
    node; loopback never leaves the machine; a tailnet address (or MagicDNS name) is carried
    by WireGuard. Anything else in plain HTTP hands the token, the agent and the job-signing
    key the node pins to whoever is on the path."""
    u = urlsplit(hub_url)
    host = (u.hostname or "").lower()
    if u.scheme == "https" or host == "localhost" or host.endswith(".ts.net"):
        return None
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if addr is not None and (addr.is_loopback or addr in TAILNET_V4 or addr in TAILNET_V6):
        return None
    return (f"{hub_url} is plain HTTP and not a tailnet or loopback address: the join token, the agent "
            "the node installs and the hub key it pins for signed jobs would cross the network "
            "unprotected (anyone on the path could take the node over). Serve HTTPS (--tls or "
            "HOMELAB_HUB_TLS=1: the node pins the certificate), use the hub's tailnet address, or "
            "pass --insecure if you accept that on this network.")


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

    from hub import tls

    cert = x509.load_pem_x509_certificate(tls.ensure_cert(data_dir).read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


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
            elif line.startswith("ExecStartPre="):
                line = line.replace("/opt/homelab-agent/", "@APP@/")
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
        "ProtectHome=read-only\n\n"
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
# (start the agent in the background with a pid file), --python PATH (python >= @PYVER@),
# --no-shell-hook (with systemd: do not install /etc/profile.d/homelab-agent.sh, which reports
# the commands of every user's interactive bash login shell to the agent).
set -eu
HUB='@HUB@'
TOKEN='@TOKEN@'
WHEEL='@WHEEL@'
FPR='@FPR@'
PREFIX=${HOMELAB_PREFIX:-}
SYSTEMD=${HOMELAB_SYSTEMD:-auto}
PY=${HOMELAB_PYTHON:-python3}
HOOK=${HOMELAB_SHELL_HOOK:-yes}
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#--prefix=}; shift ;;
    --no-systemd) SYSTEMD=no; shift ;;
    --no-shell-hook) HOOK=no; shift ;;
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
  if [ "$HOOK" = yes ] && [ -d /etc/profile.d ]; then
    # The unit's socket (/run/homelab-agent, reachable by every user); a .bash file that
    # /etc/profile's *.sh loop skips, sourced only by bash (sh -l must not parse it).
    "$AGENT" shell-hook bash --socket /run/homelab-agent/commands.sock >/etc/profile.d/homelab-agent.bash.tmp
    # shellcheck disable=SC2016 # written as is: the login shell expands it, not this script
    printf '%s\n' '# homelab-agent: report interactive bash commands to the local agent' \
      '[ -n "${BASH_VERSION:-}" ] && [ -r /etc/profile.d/homelab-agent.bash ] && . /etc/profile.d/homelab-agent.bash' \
      >/etc/profile.d/homelab-agent.sh.tmp
    chmod 644 /etc/profile.d/homelab-agent.bash.tmp /etc/profile.d/homelab-agent.sh.tmp
    mv -f /etc/profile.d/homelab-agent.bash.tmp /etc/profile.d/homelab-agent.bash
    mv -f /etc/profile.d/homelab-agent.sh.tmp /etc/profile.d/homelab-agent.sh
    say "shell hook installed for bash login shells (/etc/profile.d/homelab-agent.sh; --no-shell-hook to skip)"
  fi
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
