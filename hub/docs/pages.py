"""Self-documentation: one markdown page per node, from the twin, plus a fleet index.

Pages are a pure function of the stored state: everything is sorted and the only times on
a page are times of real changes (a file's last change, a package change, an alert
firing), never "generated at" or "last seen". So a rebuild with nothing new rewrites no
file, and `git diff` shows exactly what changed on the machine.
"""

from __future__ import annotations

import datetime
import logging
import sqlite3
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hub.twin import Twin

log = logging.getLogger(__name__)

TIMELINE = 50  # recent changes listed per node
# Event kinds after which a node's page may read differently (the debounced rebuild).
RELEVANT_KINDS = frozenset({"inventory", "package", "package_inventory", "service", "file",
                            "device", "pending_updates", "check", "container", "file_baseline"})


def utc(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def size(n: float | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class Markdown(str):
    """Text the page itself wrote (a link to a node page), passed through ``cell`` as is."""


# What nodes report is hostile: a hostname like "<img onerror=...>" or a package named
# "[x](javascript:...)" must render as text wherever the page is viewed (a browser, a forge).
_MD_ESCAPE = {c: "\\" + c for c in "\\`<>[]|"} | {c: " " for c in map(chr, (*range(32), 127))}
_MD_TABLE = str.maketrans(_MD_ESCAPE)


def cell(v: object) -> str:
    """A markdown table cell: node text has its markup escaped; pipes and newlines would
    break the row, control characters (terminal escapes) mean nothing on a page."""
    if isinstance(v, Markdown):
        return str(v)
    s = "" if v is None else str(v)
    return s.translate(_MD_TABLE).strip()


def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) if len(lines) > 2 else "_none_"


def octal(mode: int | None) -> str:
    return "" if mode is None else f"{mode:04o}"


# -- one node -----------------------------------------------------------------------------


def node_page(db: sqlite3.Connection, node: str) -> str:
    twin = Twin(db, node)
    sections = [f"# {node}", ""]
    for title, fn in SECTIONS:
        sections += [f"## {title}", "", fn(twin), ""]
    return "\n".join(sections).rstrip() + "\n"


def _yes_no(v: object) -> str:
    return "" if v is None else ("yes" if v else "no")


def _overview(twin: Twin) -> str:
    r = twin.inventory()
    if r is None:
        return "_no inventory reported yet_"
    rows = [("hostname", r["hostname"]), ("OS", r["os"]), ("kernel", r["kernel"]), ("architecture", r["arch"]),
            ("CPU", f"{r['cpu_model'] or '?'} × {r['cpu_count'] or '?'}"),
            ("memory", size(r["memory_bytes"])), ("swap", size(r["swap_bytes"])),
            ("primary address", r["primary_ip"]), ("tailnet address", r["tailscale_ip"])]
    return table(("fact", "value"), [x for x in rows if x[1]])


def _disks(twin: Twin) -> str:
    disks = table(("disk", "size", "model", "serial", "rotational", "removable"), [
        (r["name"], size(r["size_bytes"]), r["model"], r["serial"], _yes_no(r["rotational"]),
         _yes_no(r["removable"])) for r in twin.disks()])
    mounts = table(("mount", "device", "type", "size", "options"), [
        (r["mountpoint"], r["device"], r["fstype"], size(r["total_bytes"]), r["options"])
        for r in twin.mounts()])
    return f"{disks}\n\n### Mounts\n\n{mounts}"


def _interfaces(twin: Twin) -> str:
    return table(("interface", "MAC", "MTU", "up", "addresses"), [
        (r["name"], r["mac"], r["mtu"], _yes_no(r["up"]), r["addresses"]) for r in twin.interfaces()])


def _packages(twin: Twin) -> str:
    rows = twin.packages()
    manual = [r for r in rows if r["manual"] or r["manual"] is None]
    head = (f"{len(rows)} installed, {len(manual)} of them installed by hand "
            "(the rest came as dependencies and are not listed)." if rows else "")
    body = table(("package", "version", "arch", "manager"),
                 [(r["name"], r["version"], r["arch"], r["manager"]) for r in manual])
    return f"{head}\n\n{body}" if head else body


def _services(twin: Twin) -> str:
    return table(("unit", "state", "enabled"), [
        (r["unit"], f"{r['active']}" + (f" ({r['sub']})" if r["sub"] else ""), r["enabled"])
        for r in sorted(twin.services(listed=True), key=lambda r: r["unit"])])


def _files(twin: Twin) -> str:
    return table(("path", "mode", "owner", "size", "sha256", "last change"), [
        (r["path"] + (" (secret: content stays on the node)" if r["secret"] else ""), octal(r["mode"]),
         "" if r["uid"] is None else f"{r['uid']}:{r['gid']}", size(r["size"]),
         (r["sha256"] or "")[:12], utc(r["changed"]))
        for r in twin.files()])


def _timeline(twin: Twin) -> str:
    return table(("when", "what", "subject", "change", "detail"),
                 [(utc(r["ts"]), r["kind"], r["subject"], r["action"], r["detail"])
                  for r in twin.changes(limit=TIMELINE, newest_first=True)])


def _alerts(twin: Twin) -> str:
    return table(("since", "rule", "severity", "state", "summary"), [
        (utc(r["firing_at"] or r["first_seen"]), r["rule"], r["severity"], r["state"], r["summary"])
        for r in twin.db.execute(
            "SELECT * FROM alerts WHERE node = ? AND state != 'resolved' ORDER BY first_seen, id",
            (twin.node,))])


# Only what changes when something happens (state, since, outages, expiry day), never the
# latency of the last run: the page is rebuilt after each check and must not churn.
CHECK_OUTAGES_SQL = (
    "SELECT name, sum(down) FROM (SELECT name, ok = 0 AND lag(ok, 1, 1) OVER"
    " (PARTITION BY name ORDER BY ts) = 1 AS down FROM check_results WHERE node = ? AND ts > ?)"
    " GROUP BY name"
)


def _checks(twin: Twin) -> str:
    db, node = twin.db, twin.node
    rows = db.execute("SELECT * FROM checks WHERE node = ? ORDER BY name", (node,)).fetchall()
    if not rows:
        return "_no active checks run from this node_"
    newest = max(r["ts"] for r in rows)
    outages = dict(db.execute(CHECK_OUTAGES_SQL, (node, newest - 7 * 86400)).fetchall())
    return table(("check", "type", "target", "state", "certificate expires", "outages (7 days)"), [
        (r["name"], r["type"], r["target"],
         f"{'up' if r['ok'] else 'DOWN'} since {utc(r['since'])}" + ("" if r["ok"] else f": {r['error']}"),
         utc(r["cert_expires"])[:10] if r["cert_expires"] else "", outages.get(r["name"]) or 0)
        for r in rows])


def _containers(twin: Twin) -> str:
    return table(("container", "image", "state", "health", "restarts", "engine", "since"), [
        (r["name"], r["image"], r["state"], r["health"], r["restarts"], r["engine"], utc(r["changed"]))
        for r in twin.containers()])


SECTIONS = (
    ("Overview", _overview), ("Disks", _disks), ("Network interfaces", _interfaces),
    ("Packages", _packages), ("Enabled services", _services), ("Watched files", _files),
    ("Containers", _containers), ("Active checks", _checks),
    ("Open alerts", _alerts), ("Recent changes", _timeline),
)


# -- the fleet ----------------------------------------------------------------------------


def node_names(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT name FROM nodes ORDER BY name")]


def index_page(db: sqlite3.Connection) -> str:
    rows = []
    for name in node_names(db):
        r = Twin(db, name).inventory()
        alerts = db.execute("SELECT count(*) FROM alerts WHERE node = ? AND state = 'firing'",
                            (name,)).fetchone()[0]
        rows.append((Markdown(f"[{name}](nodes/{name}.md)"), r["hostname"] if r else "", r["os"] if r else "",
                     r["arch"] if r else "", alerts))
    return "\n".join([
        "# Fleet", "",
        "Generated by `homelab-hub docs build` from what the nodes report; do not edit by hand.", "",
        table(("node", "hostname", "OS", "arch", "firing alerts"), rows), "",
    ])


# -- writing ------------------------------------------------------------------------------


@dataclass
class BuildResult:
    written: list[Path] = field(default_factory=list)  # files whose content changed
    sections: dict[str, list[str]] = field(default_factory=dict)  # node -> changed sections

    def message(self) -> str:
        if not self.written:
            return "docs: no change"
        parts = [f"{n}: {', '.join(s)}" if s else n for n, s in sorted(self.sections.items())]
        return "docs: " + "; ".join(parts) if parts else "docs: index"


def _split_sections(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    cur = ""
    for line in text.splitlines():
        if line.startswith("## "):
            cur = line[3:].strip()
            out[cur] = ""
        elif cur:
            out[cur] += line + "\n"
    return out


def _write_if_changed(path: Path, text: str) -> str | None:
    """Write ``text`` unless the file already says exactly that; returns the old text."""
    old = path.read_text() if path.exists() else None
    if old == text:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return old if old is not None else ""


def build(db: sqlite3.Connection, out: Path, node: str | None = None) -> BuildResult:
    """Write ``out/index.md`` and ``out/nodes/<node>.md`` (one node, or all). Files whose
    content would not change are not touched."""
    from hub.auth import check_node_name

    out = Path(out)
    names = node_names(db)
    if node is not None:
        check_node_name(node)
        if node not in names:
            from hub.nodes import unknown_node

            raise unknown_node(node, names)
        names = [node]
    res = BuildResult()
    for name in names:
        page = node_page(db, name)
        path = out / "nodes" / f"{name}.md"
        old = _write_if_changed(path, page)
        if old is not None:
            res.written.append(path)
            before, after = _split_sections(old), _split_sections(page)
            res.sections[name] = [s for s in after if before.get(s) != after[s]] if old else ["new page"]
    if _write_if_changed(out / "index.md", index_page(db)) is not None:
        res.written.append(out / "index.md")
    return res


def git_commit(repo: Path, result: BuildResult, docs: Path | None = None) -> str | None:
    """Commit the pages under ``docs`` (default: the whole of ``repo``) with a message naming
    what changed; returns the commit id, or None when there was nothing to commit."""
    repo = Path(repo)
    rel = str(Path(docs).resolve().relative_to(repo.resolve())) if docs else "."

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)

    if not (repo / ".git").exists():
        r = git("init", "-q")
        if r.returncode != 0:
            raise RuntimeError(f"git init {repo}: {r.stderr.strip()}")
    git("add", "-A", "--", rel)
    if git("diff", "--cached", "--quiet", "--", rel).returncode == 0:
        return None
    r = git("-c", "user.name=homelab-hub", "-c", "user.email=homelab-hub@localhost",
            "commit", "-q", "-m", result.message(), "--", rel)
    if r.returncode != 0:
        raise RuntimeError(f"git commit in {repo}: {r.stderr.strip() or r.stdout.strip()}")
    return git("rev-parse", "HEAD").stdout.strip()
