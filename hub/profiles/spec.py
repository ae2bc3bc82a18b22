"""Node profiles: "configure a new machine to my exact specifications", with a person's approval.

A profile is a YAML file in ``profiles_dir``::

    name: workstation
    description: My usual desktop.
    packages: [git, htop, tmux]
    files:
      - path: /etc/motd
        content: "Welcome to {{ the lab }}\\n"   # or source: motd.txt (next to the profile)
        mode: "0644"
        owner: root
    dotfiles:
      - user: alice
        path: .bashrc                            # inside alice's home
        source: dotfiles/bashrc
        mode: "0644"

Applying a profile to a node never changes it directly: it creates proposals of the shipped
playbooks ``install-packages`` (all packages, one proposal) and ``write-file`` (one per file),
which a person approves with ``homelab-hub approve`` like any other fix. A profile assigned
to a node (``homelab-hub profiles assign``) is applied once, when the node first reports.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hub.errors import BadRequest, NotFound

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,99}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
MODE_RE = re.compile(r"^0?[0-7]{3}$")
PATH_RE = re.compile(r"^/[A-Za-z0-9_.,:@%+=/-]*$")
PROFILE_KEYS = ("name", "description", "packages", "files", "dotfiles")
FILE_KEYS = ("path", "content", "source", "mode", "owner", "user")
MAX_CONTENT = 3 * 1024  # the write-file playbook takes at most 4096 base64 characters


class ProfileError(BadRequest):
    pass


@dataclass(frozen=True)
class ProfileFile:
    path: str  # absolute, or inside user's home when user is set
    content: bytes
    mode: str = "0644"
    owner: str = "root"
    user: str = ""

    def params(self) -> dict[str, str]:
        return {"path": self.path, "user": self.user, "mode": self.mode, "owner": self.owner,
                "content": base64.b64encode(self.content).decode(),
                "sha256": hashlib.sha256(self.content).hexdigest()}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    packages: tuple[str, ...] = ()
    files: tuple[ProfileFile, ...] = field(default_factory=tuple)


def load(path: Path) -> Profile:
    """Read and validate one profile; errors name the file, the line when known, and the key."""
    path = Path(path)
    try:
        text = path.read_text()
        data = yaml.safe_load(text)
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ProfileError(f"{path}:{mark.line + 1 if mark else '?'}: invalid YAML: {getattr(e, 'problem', e)}") from None

    def err(key: str, msg: str) -> ProfileError:
        top = key.split("[")[0].split(".")[0]
        m = re.search(rf"^{re.escape(top)}\s*:", text, re.M)
        line = f":{text.count(chr(10), 0, m.start()) + 1}" if m else ""
        return ProfileError(f"{path}{line}: {key}: {msg}")

    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile is a YAML mapping")
    for k in data:
        if k not in PROFILE_KEYS:
            raise err(str(k), f"unknown key (known: {', '.join(PROFILE_KEYS)})")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise err("name", f"{name!r} is not a profile name (lowercase letters, digits, '-' and '_')")
    pkgs = data.get("packages") or []
    if not isinstance(pkgs, list):
        raise err("packages", "must be a list of package names")
    for i, p in enumerate(pkgs):
        if not isinstance(p, str) or not PKG_RE.match(p):
            raise err(f"packages[{i}]", f"{p!r} is not a package name")
    files = []
    for section, dot in (("files", False), ("dotfiles", True)):
        items = data.get(section) or []
        if not isinstance(items, list):
            raise err(section, "must be a list")
        for i, f in enumerate(items):
            files.append(_file(f, f"{section}[{i}]", dot, path.parent, err))
    seen = set()
    for f in files:
        key = (f.user, f.path)
        if key in seen:
            raise err("files", f"{'~' + f.user if f.user else ''}{f.path} is listed twice")
        seen.add(key)
    return Profile(name, str(data.get("description") or ""), tuple(sorted(set(pkgs))), tuple(files))


def _file(f, where: str, dot: bool, base: Path, err) -> ProfileFile:
    if not isinstance(f, dict):
        raise err(where, "must be a mapping with path and content or source")
    for k in f:
        if k not in FILE_KEYS:
            raise err(f"{where}.{k}", f"unknown key (known: {', '.join(FILE_KEYS)})")
    user = f.get("user", "")
    if dot and not (isinstance(user, str) and USER_RE.match(user)):
        raise err(f"{where}.user", "a dotfile needs the user whose home it goes in")
    if not dot and user:
        raise err(f"{where}.user", "only dotfiles have a user; use owner for system files")
    p = f.get("path")
    if not isinstance(p, str) or not p:
        raise err(f"{where}.path", "is required")
    p = "/" + p.lstrip("/") if dot else p
    if not PATH_RE.match(p) or ".." in p.split("/"):
        raise err(f"{where}.path", f"{p!r} must be absolute (dotfiles: inside the home), without '..' or unusual characters")
    if ("content" in f) == ("source" in f):
        raise err(where, "needs exactly one of content or source")
    if "content" in f:
        if not isinstance(f["content"], str):
            raise err(f"{where}.content", "must be a string")
        content = f["content"].encode()
    else:
        src = (base / str(f["source"])).resolve()
        if not src.is_relative_to(base.resolve()):
            raise err(f"{where}.source", "must stay inside the profile's directory")
        try:
            content = src.read_bytes()
        except OSError as e:
            raise err(f"{where}.source", f"cannot read {src}: {e.strerror}") from None
    if len(content) > MAX_CONTENT:
        raise err(where, f"{len(content)} bytes; a profile file may have at most {MAX_CONTENT} "
                         "(larger files belong in an Ansible export)")
    mode = str(f.get("mode", "0644"))
    if not MODE_RE.match(mode):
        raise err(f"{where}.mode", f"{mode!r} is not an octal mode such as \"0644\"")
    owner = f.get("owner", user or "root")
    if not isinstance(owner, str) or not USER_RE.match(owner):
        raise err(f"{where}.owner", f"{owner!r} is not a user name")
    return ProfileFile(p, content, mode, owner, user)


def find(directory: Path, name: str) -> Profile:
    if not NAME_RE.match(name or ""):
        raise ProfileError(f"{name!r} is not a profile name")
    for ext in (".yaml", ".yml"):
        p = Path(directory) / f"{name}{ext}"
        if p.exists():
            return load(p)
    raise NotFound(f"no profile {name!r} in {directory}")


def all_profiles(directory: Path) -> list[Profile]:
    d = Path(directory)
    return [load(p) for p in sorted([*d.glob("*.yaml"), *d.glob("*.yml")])] if d.is_dir() else []


def propose(db: sqlite3.Connection, registry, node: str, profile: Profile, actor: str,
            ttl: float = 86400.0) -> list[int]:
    """Create the proposals that would apply ``profile`` to ``node`` (inside the caller's
    write transaction). Returns their ids; nothing runs before a person approves."""
    from hub import proposals
    from hub.nodes import require_node

    require_node(db, node)
    ids = []
    work = []
    if profile.packages:
        work.append(("install-packages", {"packages": " ".join(profile.packages)},
                     f"profile {profile.name}: install {len(profile.packages)} package(s)"))
    for f in profile.files:
        where = f"~{f.user}{f.path}" if f.user else f.path
        work.append(("write-file", f.params(), f"profile {profile.name}: write {where}"))
    for name, params, why in work:
        pb = registry.get(name)
        if pb is None:
            raise NotFound(f"playbook {name!r} is not installed on the hub (needed by profiles)")
        ids.append(proposals.create(db, node=node, pb=pb, params=params, why=why, chosen_by="profile",
                                    ttl=ttl, budget=0, actor=actor))
    return ids


def assign(db: sqlite3.Connection, node: str, profile: str, now: float | None = None) -> None:
    from hub.nodes import require_node

    require_node(db, node)
    db.execute(
        "INSERT INTO node_profiles (node, profile, assigned) VALUES (?, ?, ?)"
        " ON CONFLICT (node, profile) DO UPDATE SET assigned = excluded.assigned, applied = NULL, proposals = NULL",
        (node, profile, time.time() if now is None else now))


def due(db: sqlite3.Connection) -> list[tuple[str, str]]:
    """Assignments whose node has reported at least once and that were not applied yet."""
    return [(r[0], r[1]) for r in db.execute(
        "SELECT a.node, a.profile FROM node_profiles a JOIN nodes n ON n.name = a.node"
        " WHERE a.applied IS NULL AND n.last_seq > 0 ORDER BY a.assigned")]


def mark_applied(db: sqlite3.Connection, node: str, profile: str, ids: list[int] | None, error: str | None = None) -> None:
    import json

    db.execute("UPDATE node_profiles SET applied = ?, proposals = ?, error = ? WHERE node = ? AND profile = ?",
               (time.time(), json.dumps(ids or []), error, node, profile))
