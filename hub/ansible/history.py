"""A watched file's content, rebuilt from where its history starts (``file_baseline``) and the
diffs after it (``file_changes``); and the fold that keeps that possible when old history
expires (event_retention): each file's content at the horizon becomes its new starting point,
so an export made a year later still recreates a config file changed once, long ago."""

from __future__ import annotations

import hashlib
import re
import sqlite3

HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def apply_diff(old: str, diff: str) -> str | None:
    """Apply a unified diff (as difflib writes it) to ``old``; None if it does not apply."""
    src = old.splitlines(keepends=True)
    out: list[str] = []
    pos = 0
    lines = diff.splitlines(keepends=True)
    i = 0
    while i < len(lines) and not lines[i].startswith("@@"):
        i += 1
    while i < len(lines):
        m = HUNK_RE.match(lines[i])
        if not m:
            return None  # truncated or not a diff
        start = int(m.group(1)) - (0 if m.group(2) == "0" else 1)
        if start < pos:
            return None
        out += src[pos:start]
        pos = start
        i += 1
        while i < len(lines) and not lines[i].startswith("@@"):
            line = lines[i]
            tag, body = line[:1], line[1:]
            if tag == " " or tag == "-":
                if pos >= len(src) or src[pos] != body:
                    return None
                if tag == " ":
                    out.append(body)
                pos += 1
            elif tag == "+":
                out.append(body)
            elif tag != "\\":
                return None
            i += 1
    out += src[pos:]
    return "".join(out)


def replay(db: sqlite3.Connection, node: str, path: str, upto: float = float("inf")) -> str | None:
    """The file's content after its changes up to sequence number ``upto``; None when the hub
    never saw it whole (a secret, a truncated diff, history that starts with a modify)."""
    content: str | None = None
    since = 0  # the agent's first-start inventory (or an earlier fold) is where history starts
    row = db.execute("SELECT content, seq FROM file_baseline WHERE node = ? AND path = ?",
                     (node, path)).fetchone()
    if row is not None:
        content, since = row
    for action, diff, secret, size in db.execute(
            "SELECT action, diff, secret, size FROM file_changes WHERE node = ? AND path = ?"
            " AND seq > ? AND seq <= ? ORDER BY seq", (node, path, since, upto)):
        if secret or action in ("delete", "move"):
            content = None
        elif action == "create":  # an empty file has no diff at all
            content = apply_diff("", diff) if diff else ("" if size == 0 else None)
        elif action == "modify":
            content = apply_diff(content, diff) if content is not None and diff else None
        # attrib: content unchanged
    return content


def file_content(db: sqlite3.Connection, node: str, path: str, sha256: str | None) -> str | None:
    """The file's current content rebuilt from its history, if it matches ``sha256``."""
    if not sha256:
        return None
    content = replay(db, node, path)
    if content is None or hashlib.sha256(content.encode()).hexdigest() != sha256:
        return None
    return content


FOLD_SQL = (
    "INSERT INTO file_baseline (node, path, sha256, content, seq, ts) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node, path) DO UPDATE SET sha256 = excluded.sha256, content = excluded.content,"
    " seq = excluded.seq, ts = excluded.ts WHERE excluded.seq > file_baseline.seq"
)


def fold_history(db: sqlite3.Connection, cutoff: float) -> int:
    """Before file_changes rows older than ``cutoff`` expire, make each such file's content at
    its last old change its baseline. Deleting any of those rows afterwards loses nothing the
    export needs; returns how many files were folded. Runs in the caller's transaction."""
    files = db.execute(
        "SELECT c.node, c.path, max(c.seq), max(c.ts) FROM file_changes c"
        " LEFT JOIN file_baseline b ON b.node = c.node AND b.path = c.path"
        " WHERE c.ts < ? AND c.seq > coalesce(b.seq, 0) GROUP BY c.node, c.path", (cutoff,)).fetchall()
    for node, path, seq, ts in files:
        content = replay(db, node, path, seq)
        sha = None if content is None else hashlib.sha256(content.encode()).hexdigest()
        db.execute(FOLD_SQL, (node, path, sha, content, seq, ts))
    return len(files)
