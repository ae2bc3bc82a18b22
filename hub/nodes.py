"""One answer, everywhere a person names a node: "no node 'nas'; did you mean nas01?"."""

from __future__ import annotations

import difflib
import sqlite3

from hub.errors import NotFound


def suggest(name: str, known: list[str]) -> str | None:
    """The closest known name: a unique prefix match first ('nas' -> 'nas01'), else the most
    similar by difflib (typos: 'nsa01' -> 'nas01'), else None."""
    low = name.lower()
    prefixed = [k for k in known if k.lower().startswith(low)]
    if len(prefixed) == 1:
        return prefixed[0]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return close[0]
    return prefixed[0] if prefixed else None


def unknown_node(name: str, known: list[str]) -> NotFound:
    hint = suggest(name, known)
    if hint:
        return NotFound(f"no node {name!r}; did you mean {hint}?")
    if known:
        return NotFound(f"no node {name!r}; known nodes: {', '.join(known[:20])}")
    return NotFound(f"no node {name!r}: no node has been enrolled yet (homelab-hub enroll NAME)")


def require_node(db: sqlite3.Connection, name: str, also: str | None = None) -> None:
    """Raise NotFound with a suggestion unless NAME is an enrolled node (or, with ``also``, a
    value of that SQL query's one column: names other tables know, such as a document's node)."""
    if db.execute("SELECT 1 FROM nodes WHERE name = ?", (name,)).fetchone() is not None:
        return
    known = {r[0] for r in db.execute("SELECT name FROM nodes")}
    if also:
        extra = {r[0] for r in db.execute(also) if r[0]}
        if name in extra:
            return
        known |= extra
    raise unknown_node(name, sorted(known))
