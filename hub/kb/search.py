"""Knowledge-base search: SQLite FTS5 with bm25 ranking (headings weigh 3x body text),
highlighted snippets, and filters by category, tag, node and date.

People type questions, not FTS5 syntax, so the query is parsed here: words and
"quoted phrases" (word* for a prefix) become quoted FTS5 terms joined by OR -- bm25 then
favours passages matching more and rarer terms -- and nothing the user types can reach
FTS5 as an operator, so no query is ever a syntax error.
"""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import datetime

from agent.settings import parse_duration
from hub.errors import BadRequest
from hub.kb.classify import _STOP

HIGHLIGHT = ("**", "**")
_TERM = re.compile(r'"([^"]*)"|(\S+)')
_WORD = re.compile(r"[\w]+(?:[.'-][\w]+)*\*?", re.UNICODE)
MAX_QUERY = 1000


def fts_query(q: str) -> str | None:
    """User text -> a safe FTS5 MATCH expression, or None when nothing searchable is left."""
    if len(q) > MAX_QUERY:
        raise BadRequest(f"query too long ({len(q)} characters, at most {MAX_QUERY})")
    phrases: list[str] = []
    words: list[str] = []
    for m in _TERM.finditer(q):
        if m.group(1) is not None:
            ws = _WORD.findall(m.group(1))
            if ws:
                phrases.append(" ".join(w.rstrip("*") for w in ws))
        else:
            words += _WORD.findall(m.group(2))
    kept = [w for w in words if w.lower().rstrip("*") not in _STOP] or words
    terms: list[str] = []
    for p in phrases:
        terms.append('"' + p.replace('"', '""') + '"')
    seen = set()
    for w in kept:
        prefix = w.endswith("*")
        w = w.rstrip("*")
        if not w or w.lower() in seen:
            continue
        seen.add(w.lower())
        terms.append('"' + w.replace('"', '""') + '"' + ("*" if prefix and len(w) >= 2 else ""))
    return " OR ".join(terms[:64]) if terms else None


COMMON_MIN = 2000  # a knowledge base smaller than this is never narrowed
COMMON_SHARE = 0.04  # a term in more than this share of passages is "common"


def narrow(db: sqlite3.Connection, match: str) -> str:
    """Keep big knowledge bases fast: bm25 costs per matching passage, and an OR of common
    words matches most of them. When some terms are rare, only passages with a rare term
    are candidates; common terms still count in their ranking, rare ones twice."""
    terms = match.split(" OR ")
    total = db.execute("SELECT max(rowid) FROM kb_passages").fetchone()[0] or 0
    cap = max(COMMON_MIN, int(total * COMMON_SHARE))
    if len(terms) < 2 or total <= cap:
        return match
    count = "SELECT count(*) FROM (SELECT 1 FROM kb_passages_fts WHERE kb_passages_fts MATCH ? LIMIT ?)"
    rare = [t for t in terms if db.execute(count, (t, cap + 1)).fetchone()[0] <= cap]
    if not rare:
        return " AND ".join(terms)  # only common words: passages with all of them
    if len(rare) == len(terms):
        return match
    return f"({' OR '.join(rare)}) AND ({match})"


def parse_when(v: str | float | int | None, now: float | None = None) -> float | None:
    """'2024-05-01', '2024-05-01T10:00', an epoch, or an age such as '7d' -> epoch seconds."""
    if v is None or v == "":
        return None
    if isinstance(v, int | float):
        return float(v)
    s = str(v).strip()
    try:
        return datetime.fromisoformat(s).timestamp()
    except ValueError:
        pass
    try:
        return (now or time.time()) - parse_duration(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        raise BadRequest(f"bad date {v!r}: use YYYY-MM-DD, an ISO time, or an age such as 7d") from None


def document_filters(category: str | None, tag: str | None, node: str | None) -> tuple[list[str], list]:
    """WHERE clauses and arguments on documents `d`, shared by search and listing."""
    where: list[str] = []
    args: list = []
    if category:
        where.append("d.category = ?")
        args.append(category.strip().lower())
    if tag:
        where.append("EXISTS (SELECT 1 FROM kb_tags t WHERE t.document_id = d.id AND t.tag = ?)")
        args.append(tag.strip().lstrip("#").lower())
    if node:
        where.append("d.node = ?")
        args.append(node)
    return where, args


SHARED_TAG = "shared"
# A node sees documents about itself, and those the administrator tagged #shared; never
# another node's (its self-documentation names its addresses, OS and package versions).
VISIBLE_SQL = ("(d.node = ? OR EXISTS (SELECT 1 FROM kb_tags t WHERE t.document_id = d.id AND t.tag = '"
               + SHARED_TAG + "'))")


def visible(db: sqlite3.Connection, document_id: int, node: str) -> bool:
    return db.execute(f"SELECT 1 FROM kb_documents d WHERE d.id = ? AND {VISIBLE_SQL}",
                      (document_id, node)).fetchone() is not None


def search(db: sqlite3.Connection, query: str, limit: int = 5, *, category: str | None = None,
           tag: str | None = None, node: str | None = None, since: str | float | None = None,
           until: str | float | None = None, per_document: int = 1, hybrid: bool = False,
           highlight: tuple[str, str] = HIGHLIGHT, visible_to: str | None = None) -> list[dict]:
    """Best passages for ``query``, best first; at most ``per_document`` from one document.
    ``visible_to``: a node's name when a node asks (see VISIBLE_SQL); None for the admin.

    Each result: passage_id, document_id, title, heading_path, snippet, score (higher is
    better), source (path or URL), category, node, kind, date."""
    if not 1 <= int(limit) <= 500:
        raise BadRequest("limit must be between 1 and 500")
    match = fts_query(query)
    if match is None:
        return []
    where, args = document_filters(category, tag, node)
    where.insert(0, "kb_passages_fts MATCH ?")
    args.insert(0, narrow(db, match))
    if visible_to is not None:
        where.append(VISIBLE_SQL)
        args.append(visible_to)
    if (s := parse_when(since)) is not None:
        where.append("d.date >= ?")
        args.append(s)
    if (u := parse_when(until)) is not None:
        where.append("d.date < ?")
        args.append(u)
    fetch = int(limit) * (1 if per_document <= 0 else 4) + 16
    # Rank first, touching only the FTS index (and the filter tables when filtering); the
    # snippets and document columns are computed for the few winners only -- computed in
    # the ranking query, SQLite would build them for every matching passage before sorting.
    joins = (" JOIN kb_passages p ON p.id = f.rowid JOIN kb_documents d ON d.id = p.document_id"
             if len(where) > 1 else "")
    hits = db.execute(
        f"SELECT f.rowid, f.rank FROM kb_passages_fts f{joins} WHERE {' AND '.join(where)}"
        " ORDER BY f.rank LIMIT ?", [*args, fetch]).fetchall()
    rows = []
    for pid, rank in hits:
        r = db.execute(
            "SELECT p.id, p.document_id, d.title, p.heading_path, d.source, d.category, d.node, d.kind, d.date"
            " FROM kb_passages p JOIN kb_documents d ON d.id = p.document_id WHERE p.id = ?", (pid,)).fetchone()
        if r is not None:
            rows.append((*r[:4], None, rank, *r[4:]))
    results: list[dict] = []
    per: dict[int, int] = {}
    for r in rows:
        if per_document > 0 and per.get(r[1], 0) >= per_document:
            continue
        per[r[1]] = per.get(r[1], 0) + 1
        results.append({
            "passage_id": r[0], "document_id": r[1], "title": r[2], "heading_path": r[3],
            "snippet": None, "score": float(f"{-r[5]:.6g}"), "source": r[6], "category": r[7],
            "node": r[8], "kind": r[9], "date": r[10],
        })
        if len(results) >= int(limit) and not hybrid:
            break
    if hybrid:
        from hub.kb import embed

        results = embed.fuse(db, query, results, limit, per_document)
        if visible_to is not None:  # the nearest passages by embedding come from everywhere
            results = [r for r in results if visible(db, r["document_id"], visible_to)]
    results = results[: int(limit)]
    for res in results:
        snip = db.execute(
            "SELECT snippet(kb_passages_fts, 1, ?, ?, '…', 24) FROM kb_passages_fts"
            " WHERE kb_passages_fts MATCH ? AND rowid = ?",
            (highlight[0], highlight[1], match, res["passage_id"])).fetchone()
        res["snippet"] = snip[0] if snip else ""
    return results


def passage(db: sqlite3.Connection, passage_id: int) -> dict | None:
    r = db.execute("SELECT p.id, p.document_id, d.title, p.heading_path, p.text, d.source"
                   " FROM kb_passages p JOIN kb_documents d ON d.id = p.document_id WHERE p.id = ?",
                   (passage_id,)).fetchone()
    if r is None:
        return None
    return dict(zip(("passage_id", "document_id", "title", "heading_path", "text", "source"), r, strict=True))
