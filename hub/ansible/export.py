"""Configuration as code: an Ansible inventory and playbook that recreate a node from a fresh
OS install, and the node's state as a manifest that `ansible drift` compares against later.

What goes in is only what the hub knows for certain:
- packages installed by hand (not their dependencies), per package manager;
- systemd units that are enabled;
- watched files whose exact content the hub can rebuild from the diffs the agent sent,
  checked against the SHA-256 the agent reported. Secret files (not world-readable) never
  leave the node, and files whose content the hub never saw in full, become manual steps;
- the agent itself, from the hub, with a join token you pass in.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import shutil
import sqlite3
import time
from pathlib import Path

import yaml

from hub.ansible.history import file_content
from hub.auth import check_node_name
from hub.errors import NotFound

MANIFEST = "export.json"
# Everything below comes from nodes, and Ansible templates any "{{ ... }}" in variables on
# the controller: only names and paths made of plain characters go into the playbook.
SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9_.,:@%+=/-]*$")
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+\\-]{0,254}$")
APT_MANAGERS = {"dpkg", "apt"}
DNF_MANAGERS = {"rpm", "dnf", "yum"}


# -- the node as data ---------------------------------------------------------------------


def _has(db: sqlite3.Connection, table: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone() is not None


def snapshot(db: sqlite3.Connection, node: str) -> dict:
    """What the node is now, as far as recreating it goes. Sorted, JSON-ready."""
    check_node_name(node)
    from hub.twin import Twin

    twin = Twin(db, node)
    row = db.execute("SELECT name, address FROM nodes WHERE name = ?", (node,)).fetchone()
    inv = twin.inventory()
    host = (address(inv["tailscale_ip"]) or address(inv["primary_ip"])) if inv else None
    packages: dict[str, dict[str, str]] = {}
    for p in twin.packages(manual_only=True):
        packages.setdefault(p["manager"], {})[p["name"]] = p["version"] or ""
    services = {s["unit"]: {"active": s["active"] == "active"}
                for s in sorted(twin.services(enabled=True), key=lambda s: s["unit"])}
    files = {}
    for f in twin.files():
        content = None if f["secret"] else file_content(db, node, f["path"], f["sha256"])
        files[f["path"]] = {"mode": None if f["mode"] is None else f"{f['mode']:04o}", "uid": f["uid"],
                            "gid": f["gid"], "sha256": f["sha256"], "secret": bool(f["secret"]),
                            "content": content}
    return {"node": node, "host": host or address(row[1]), "packages": packages, "services": services, "files": files}


def address(value: object) -> str | None:
    """An IP address in its canonical text, or None. Node-reported facts are hostile: a
    "primary_ip" with a newline once added ansible_ssh_common_args to the inventory."""
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def md_code(value: object) -> str:
    """A node-reported string as a Markdown code span it cannot break out of: no backticks,
    no line breaks, nothing but printable ASCII (the rest as \\uXXXX)."""
    text = str(value)
    safe = "".join(c if " " <= c <= "~" and c not in "`\\" else f"\\u{ord(c):04x}" for c in text[:300])
    return f"`{safe}`" + (" (cut)" if len(text) > 300 else "")


# -- writing the export -------------------------------------------------------------------


def _file_rel(path: str) -> str:
    return "files/" + path.lstrip("/")


def render(snap: dict, hub_url: str) -> dict[str, str]:
    """The export's files, name -> text (file contents under files/ included)."""
    node = snap["node"]
    out: dict[str, str] = {}
    host = address(snap["host"])
    # INI has no quoting Ansible honours: only validated pieces go in (a node name by
    # NODE_RE, an address by ipaddress); anything else is simply not written
    check_node_name(node)
    out["inventory.ini"] = f"[homelab]\n{node}" + (f" ansible_host={host}" if host else "") + "\n"
    manual_steps: list[str] = []
    files_var = []
    for path, f in snap["files"].items():
        if not SAFE_PATH_RE.match(path) or ".." in path.split("/"):
            manual_steps.append(f"- {md_code(path)}: left out — the path has characters an export "
                                "does not pass to Ansible (or '..'); check it by hand.")
            continue
        if f["content"] is None:
            why = ("secret: its content never leaves the node" if f["secret"]
                   else "the hub has not seen its full content (it predates the agent, or a diff was truncated)")
            manual_steps.append(f"- {md_code(path)} (mode {md_code(f['mode'])}, owner {md_code(f['uid'])}:"
                                f"{md_code(f['gid'])}): copy it by hand — {why}.")
            continue
        out[_file_rel(path)] = f["content"]
        files_var.append({"src": _file_rel(path), "dest": path, "mode": f["mode"],
                          "owner": str(f["uid"]), "group": str(f["gid"])})
    pkgs = {m: [n for n in ps if SAFE_NAME_RE.match(n)] for m, ps in snap["packages"].items()}
    for m, ps in snap["packages"].items():
        for n in ps:
            if not SAFE_NAME_RE.match(n):
                manual_steps.append(f"- package {md_code(n)} ({md_code(m)}): left out — not a plain package name.")
    units = {u: v for u, v in snap["services"].items() if SAFE_NAME_RE.match(u)}
    for u in snap["services"]:
        if u not in units:
            manual_steps.append(f"- unit {md_code(u)}: left out — not a plain unit name.")
    host_vars = {
        "homelab_hub_url": hub_url,
        "homelab_packages_apt": sorted(n for m in APT_MANAGERS for n in pkgs.get(m, [])),
        "homelab_packages_dnf": sorted(n for m in DNF_MANAGERS for n in pkgs.get(m, [])),
        "homelab_packages_other": sorted(n for m, ps in pkgs.items()
                                         if m not in APT_MANAGERS | DNF_MANAGERS for n in ps),
        "homelab_services": [{"name": u, "started": s["active"]} for u, s in units.items()],
        "homelab_files": files_var,
    }
    out[f"host_vars/{node}.yml"] = (
        f"# {node} as the Sentient Homelab hub last saw it. Regenerate with\n"
        f"#   homelab-hub ansible export {node} -o DIR\n"
        + yaml.safe_dump(host_vars, sort_keys=True, default_flow_style=False))
    out["site.yml"] = yaml.safe_dump(_playbook(node), sort_keys=False, default_flow_style=False, width=120)
    steps = "\n".join(manual_steps) or "None: everything the hub watched is in the playbook."
    out["README.md"] = (
        f"# Recreate {node}\n\n"
        f"On a fresh OS install reachable over SSH as root (or a sudoer):\n\n"
        f"```sh\nhomelab-hub enroll {node}     # on the hub: prints a join token (hlj_...)\n"
        f"ansible-playbook -i inventory.ini site.yml -e homelab_join_token=hlj_...\n```\n\n"
        f"Without a token the agent step is skipped; everything else still runs.\n"
        f"`--check` shows what would change without changing anything.\n\n"
        f"## Manual steps\n\n{steps}\n")
    return out


def _playbook(node: str) -> list[dict]:
    systemd = "ansible_facts.service_mgr == 'systemd'"
    return [{
        "name": f"Recreate {node} (generated by homelab-hub ansible export)",
        "hosts": node,
        "become": True,
        "gather_facts": True,
        "vars": {"homelab_join_token": ""},
        "tasks": [
            {"name": "Packages installed by hand (apt)",
             "ansible.builtin.apt": {"name": "{{ homelab_packages_apt }}", "state": "present",
                                     "update_cache": True, "cache_valid_time": 86400},
             "when": "homelab_packages_apt | length > 0 and ansible_facts.pkg_mgr == 'apt'"},
            {"name": "Packages installed by hand (dnf)",
             "ansible.builtin.dnf": {"name": "{{ homelab_packages_dnf }}", "state": "present"},
             "when": "homelab_packages_dnf | length > 0 and ansible_facts.pkg_mgr in ['dnf', 'dnf5', 'yum']"},
            {"name": "Packages installed by hand (other managers)",
             "ansible.builtin.package": {"name": "{{ homelab_packages_other }}", "state": "present"},
             "when": "homelab_packages_other | length > 0"},
            {"name": "Directories of the watched files",
             "ansible.builtin.file": {"path": "{{ item.dest | dirname }}", "state": "directory"},
             "loop": "{{ homelab_files }}", "loop_control": {"label": "{{ item.dest | dirname }}"}},
            {"name": "Watched files: content, mode and owner",
             "ansible.builtin.copy": {"src": "{{ item.src }}", "dest": "{{ item.dest }}", "mode": "{{ item.mode }}",
                                      "owner": "{{ item.owner }}", "group": "{{ item.group }}"},
             "loop": "{{ homelab_files }}", "loop_control": {"label": "{{ item.dest }}"}},
            {"name": "Enabled services",
             "ansible.builtin.systemd_service": {"name": "{{ item.name }}", "enabled": True,
                                                 "state": "{{ 'started' if item.started else omit }}"},
             "loop": "{{ homelab_services }}", "loop_control": {"label": "{{ item.name }}"},
             "when": systemd},
            {"name": "The Sentient Homelab agent, from the hub",
             "ansible.builtin.shell": "curl -sSL '{{ homelab_hub_url }}/bootstrap.sh?token={{ homelab_join_token }}' | sh",
             "args": {"creates": "/var/lib/homelab-agent/credential"},
             "when": "homelab_join_token | length > 0"},
            {"name": "Agent skipped: no join token",
             "ansible.builtin.debug": {
                 "msg": f"Run `homelab-hub enroll {node}` on the hub and pass -e homelab_join_token=hlj_..."},
             "when": "homelab_join_token | length == 0"},
        ],
    }]


def export(db: sqlite3.Connection, node: str, out: Path, hub_url: str) -> dict:
    """Write the export into ``out``; returns the manifest (also written as export.json)."""
    snap = snapshot(db, node)
    files = render(snap, hub_url)
    out = Path(out)
    if (out / "files").exists():  # content of files no longer watched must not linger
        shutil.rmtree(out / "files")
    for name, text in files.items():
        p = out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    manifest = {"format": 1, "node": node, "exported": time.time(), "dir": str(out.resolve()),
                "packages": snap["packages"], "services": snap["services"],
                "files": {p: {k: v for k, v in f.items() if k != "content"} | {"content_known": f["content"] is not None}
                          for p, f in snap["files"].items()}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def record(db: sqlite3.Connection, manifest: dict) -> None:
    db.execute("INSERT INTO exports (node, created, kind, dir, manifest) VALUES (?, ?, 'ansible', ?, ?)",
               (manifest["node"], manifest["exported"], manifest["dir"], json.dumps(manifest, sort_keys=True)))


# -- drift --------------------------------------------------------------------------------


def last_export(db: sqlite3.Connection, node: str) -> dict:
    row = db.execute("SELECT manifest FROM exports WHERE node = ? ORDER BY created DESC, id DESC LIMIT 1",
                     (node,)).fetchone() if _has(db, "exports") else None
    if row is None:
        raise NotFound(f"node {node!r} has never been exported: run `homelab-hub ansible export {node} -o DIR` first")
    return json.loads(row[0])


def load_baseline(path: Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST
    try:
        m = json.loads(p.read_text())
    except FileNotFoundError:
        raise NotFound(f"{p}: no such export manifest") from None
    except ValueError as e:
        from hub.errors import BadRequest

        raise BadRequest(f"{p}: not an export manifest: {e}") from None
    if not isinstance(m, dict) or m.get("format") != 1 or "packages" not in m:
        from hub.errors import BadRequest

        raise BadRequest(f"{p}: not an export manifest (no format 1 / packages)")
    m.setdefault("dir", str(p.parent.resolve()))
    return m


def drift(db: sqlite3.Connection, node: str, baseline: dict) -> list[str]:
    """Readable lines describing how the node differs from ``baseline``; [] if it does not."""
    import difflib

    if baseline.get("node") not in (None, node):
        from hub.errors import BadRequest

        raise BadRequest(f"the baseline is an export of {baseline['node']!r}, not of {node!r}")
    now = snapshot(db, node)
    out: list[str] = []
    for manager in sorted(set(baseline["packages"]) | set(now["packages"])):
        was, cur = baseline["packages"].get(manager, {}), now["packages"].get(manager, {})
        lines = [f"  + {n} {cur[n]}" for n in sorted(set(cur) - set(was))]
        lines += [f"  - {n} {was[n]}" for n in sorted(set(was) - set(cur))]
        lines += [f"  ~ {n} {was[n]} -> {cur[n]}" for n in sorted(set(was) & set(cur)) if was[n] != cur[n]]
        if lines:
            out += [f"packages ({manager}):", *sorted(lines, key=lambda s: s[4:])]
    was_s, cur_s = baseline["services"], now["services"]
    lines = [f"  + {u} (now enabled)" for u in sorted(set(cur_s) - set(was_s))]
    lines += [f"  - {u} (no longer enabled)" for u in sorted(set(was_s) - set(cur_s))]
    if lines:
        out += ["services:", *sorted(lines, key=lambda s: s[4:])]
    was_f, cur_f = baseline["files"], now["files"]
    lines = []
    for path in sorted(set(was_f) | set(cur_f)):
        a, b = was_f.get(path), cur_f.get(path)
        if a is None:
            lines.append(f"  + {path} (newly watched)")
            continue
        if b is None:
            lines.append(f"  - {path} (deleted)")
            continue
        for key, label in (("mode", "mode"), ("uid", "owner uid"), ("gid", "group gid")):
            if a.get(key) != b.get(key):
                lines.append(f"  ~ {path}: {label} {a.get(key)} -> {b.get(key)}")
        if a.get("sha256") != b.get("sha256"):
            lines.append(f"  ~ {path}: content changed")
            old_file = Path(baseline.get("dir", "")) / _file_rel(path)
            if b["content"] is not None and old_file.is_file():
                diff = difflib.unified_diff(old_file.read_text().splitlines(keepends=True),
                                            b["content"].splitlines(keepends=True), "export", "now")
                lines += ["      " + d.rstrip("\n") for d in diff]
            elif b["secret"]:
                lines.append("      (secret file: no content to compare)")
    if lines:
        out += ["files:", *lines]
    return out


def when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
