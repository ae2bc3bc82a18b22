"""Read-side views of the knowledge base for the CLI and HTTP API."""

from __future__ import annotations

import json
import sqlite3

from hub.errors import NotFound
from hub.kb.search import document_filters

_COLS = ("id", "title", "kind", "language", "category", "category_source", "node", "source",
         "date", "added", "updated", "sha256", "size")


def list_documents(db: sqlite3.Connection, *, category: str | None = None, tag: str | None = None,
                   node: str | None = None, limit: int = 100) -> list[dict]:
    where, args = document_filters(category, tag, node)
    sql = (f"SELECT {', '.join('d.' + c for c in _COLS)},"
           " (SELECT group_concat(tag, ' ') FROM kb_tags t WHERE t.document_id = d.id) AS tags"
           f" FROM kb_documents d {'WHERE ' + ' AND '.join(where) if where else ''}"
           " ORDER BY d.updated DESC, d.id DESC LIMIT ?")
    out = []
    for r in db.execute(sql, [*args, limit]):
        d = dict(zip(_COLS, r, strict=False))
        d["tags"] = sorted((r[len(_COLS)] or "").split())
        out.append(d)
    return out


def document(db: sqlite3.Connection, doc_id: int) -> dict:
    r = db.execute(f"SELECT {', '.join(_COLS)}, body, frontmatter FROM kb_documents WHERE id = ?",
                   (doc_id,)).fetchone()
    if r is None:
        raise NotFound(f"no knowledge-base document with id {doc_id}")
    d = dict(zip(_COLS, r, strict=False))
    d["body"] = r[len(_COLS)]
    d["frontmatter"] = json.loads(r[len(_COLS) + 1]) if r[len(_COLS) + 1] else None
    d["tags"] = [t[0] for t in db.execute("SELECT tag FROM kb_tags WHERE document_id = ? ORDER BY tag", (doc_id,))]
    d["links"] = [t[0] for t in db.execute("SELECT target FROM kb_links WHERE document_id = ? ORDER BY target", (doc_id,))]
    d["passages"] = [
        {"id": p[0], "heading_path": p[1], "text": p[2]}
        for p in db.execute("SELECT id, heading_path, text FROM kb_passages WHERE document_id = ? ORDER BY ord", (doc_id,))
    ]
    return d
