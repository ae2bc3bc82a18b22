"""Writing knowledge-base documents: one SAVEPOINT per document, so a caller inside the
hub writer's transaction (the brain, self-documentation) and the CLI outside one both get
all-or-nothing per document, and one bad document never takes others with it."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from hub.errors import BadRequest, NotFound
from hub.kb import classify, split

log = logging.getLogger(__name__)


@dataclass
class Doc:
    """A document ready to store: readable text plus what the source said about it."""

    source: str
    kind: str  # markdown, text, html, code
    title: str
    body: str
    sha256: str
    size: int
    language: str | None = None
    category: str | None = None  # declared by the source or the user: also a training example
    tags: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    node: str | None = None
    date: float | None = None
    frontmatter: dict | None = None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sync_categories(db: sqlite3.Connection, names: Sequence[str]) -> None:
    """Make ``names`` the active categories. Inactive ones stay for documents that use them."""
    names = [n.strip().lower() for n in names if n.strip()]
    if not names:
        raise BadRequest("kb_categories is empty: at least one category is needed")
    have = {r[0]: r[1] for r in db.execute("SELECT name, active FROM kb_categories")}
    if set(names) == {k for k, v in have.items() if v} and len(names) == len(set(names)):
        return
    db.execute("UPDATE kb_categories SET active = 0")
    db.executemany("INSERT INTO kb_categories (name) VALUES (?) ON CONFLICT (name) DO UPDATE SET active = 1",
                   [(n,) for n in names])


def categories(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT name FROM kb_categories WHERE active ORDER BY rowid")]


def check_category(db: sqlite3.Connection, category: str) -> str:
    cats = categories(db)
    c = category.strip().lower()
    if c not in cats:
        raise BadRequest(f"unknown category {category!r}; known: {', '.join(cats)} (setting kb_categories)")
    return c


def _norm_tags(tags: Iterable[str]) -> list[str]:
    out: list[str] = []
    for t in tags:
        t = str(t).strip().lstrip("#").lower()
        if t and len(t) <= 64 and t not in out:
            out.append(t)
    return out


def save(db: sqlite3.Connection, doc: Doc, cats: Sequence[str], model: classify.Model | None,
         now: float | None = None) -> tuple[str, int]:
    """Store ``doc``: ('added' | 'updated' | 'unchanged', document id)."""
    now = now or time.time()
    row = db.execute("SELECT id, sha256, category, category_source, added FROM kb_documents WHERE source = ?",
                     (doc.source,)).fetchone()
    if row is not None and row[1] == doc.sha256:
        return "unchanged", row[0]
    if doc.category is not None and doc.category in cats:
        category, how = doc.category, "given"
    elif row is not None and row[3] == "person":
        category, how = row[2], "person"  # a person's choice survives edits
    else:
        category, how = classify.choose(doc.title, doc.body, doc.kind, cats, model)
    tags = _norm_tags([*doc.tags, *([doc.language] if doc.language else []),
                       *classify.auto_tags(doc.title, doc.body)])
    pieces = (split.split_markdown(doc.title, doc.body) if doc.kind in ("markdown", "html")
              else split.split_plain(doc.title, doc.body))
    fm = json.dumps(doc.frontmatter, default=str) if doc.frontmatter else None
    values = (doc.kind, doc.language, doc.title, doc.body, doc.sha256, doc.size, category, how,
              doc.node, doc.date or now, now, fm)
    db.execute("SAVEPOINT kb_save")
    try:
        if row is None:
            cur = db.execute(
                "INSERT INTO kb_documents (kind, language, title, body, sha256, size, category,"
                " category_source, node, date, updated, frontmatter, source, added)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (*values, doc.source, now))
            doc_id = int(cur.lastrowid or 0)
            status = "added"
        else:
            doc_id = row[0]
            db.execute(
                "UPDATE kb_documents SET kind = ?, language = ?, title = ?, body = ?, sha256 = ?,"
                " size = ?, category = ?, category_source = ?, node = ?, date = ?, updated = ?,"
                " frontmatter = ? WHERE id = ?", (*values, doc_id))
            db.execute("DELETE FROM kb_embeddings WHERE passage_id IN"
                       " (SELECT id FROM kb_passages WHERE document_id = ?)", (doc_id,))
            for table in ("kb_passages", "kb_tags", "kb_links"):
                db.execute(f"DELETE FROM {table} WHERE document_id = ?", (doc_id,))
            status = "updated"
        db.executemany("INSERT INTO kb_passages (document_id, ord, heading_path, text) VALUES (?, ?, ?, ?)",
                       [(doc_id, i, p.heading_path, p.text) for i, p in enumerate(pieces)])
        db.executemany("INSERT INTO kb_tags (document_id, tag) VALUES (?, ?)", [(doc_id, t) for t in tags])
        db.executemany("INSERT OR IGNORE INTO kb_links (document_id, target) VALUES (?, ?)",
                       [(doc_id, t) for t in doc.links])
        if how in ("given", "person"):
            _learn(db, doc_id, category, how, doc.title, doc.body, now)
        db.execute("RELEASE kb_save")
    except BaseException:
        db.execute("ROLLBACK TO kb_save")
        db.execute("RELEASE kb_save")
        raise
    return status, doc_id


def _learn(db: sqlite3.Connection, doc_id: int, category: str, how: str, title: str, body: str, now: float) -> None:
    db.execute(
        "INSERT INTO kb_training (document_id, category, source, text, created) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (document_id) DO UPDATE SET category = excluded.category,"
        " source = excluded.source, text = excluded.text, created = excluded.created",
        (doc_id, category, how, classify.training_text(title, body), now))


def set_category(db: sqlite3.Connection, doc_id: int, category: str) -> dict:
    """A person's override: stored, kept across edits, and taught to the classifier."""
    category = check_category(db, category)
    row = db.execute("SELECT title, body, category FROM kb_documents WHERE id = ?", (doc_id,)).fetchone()
    if row is None:
        raise NotFound(f"no knowledge-base document with id {doc_id}")
    db.execute("UPDATE kb_documents SET category = ?, category_source = 'person' WHERE id = ?",
               (category, doc_id))
    _learn(db, doc_id, category, "person", row[0], row[1], time.time())
    return {"id": doc_id, "category": category, "was": row[2]}


def remove(db: sqlite3.Connection, doc_id: int) -> dict:
    row = db.execute("SELECT id, title, source FROM kb_documents WHERE id = ?", (doc_id,)).fetchone()
    if row is None:
        raise NotFound(f"no knowledge-base document with id {doc_id}")
    _delete(db, "id = ?", (doc_id,))
    return {"id": row[0], "title": row[1], "source": row[2]}


def _delete(db: sqlite3.Connection, where: str, args: tuple) -> int:
    # explicit child deletes: a caller's connection may not have PRAGMA foreign_keys on
    ids = f"SELECT id FROM kb_documents WHERE {where}"
    for table in ("kb_embeddings", "kb_passages", "kb_tags", "kb_links"):
        col = "passage_id IN (SELECT id FROM kb_passages WHERE document_id IN ({}))" if table == "kb_embeddings" \
            else "document_id IN ({})"
        db.execute(f"DELETE FROM {table} WHERE {col.format(ids)}", args)
    db.execute(f"UPDATE kb_training SET document_id = NULL WHERE document_id IN ({ids})", args)
    return db.execute(f"DELETE FROM kb_documents WHERE {where}", args).rowcount


def remove_source(db: sqlite3.Connection, source: str) -> int:
    """Remove the document from ``source`` or, for a folder, every document under it."""
    prefix = source.rstrip("/") + "/"
    return _delete(db, "source = ? OR substr(source, 1, ?) = ?", (source, len(prefix), prefix))


def rename_source(db: sqlite3.Connection, old: str, new: str) -> int:
    """A file or folder moved: keep ids (and a person's categories), change the paths."""
    prefix = old.rstrip("/") + "/"
    db.execute("DELETE FROM kb_documents WHERE source = ?", (new,))
    cur = db.execute(
        "UPDATE kb_documents SET source = CASE WHEN source = ?1 THEN ?2 ELSE ?3 || substr(source, ?4) END"
        " WHERE source = ?1 OR substr(source, 1, length(?5)) = ?5",
        (old, new, new.rstrip("/") + "/", len(prefix) + 1, prefix))
    return cur.rowcount


def add_text(db: sqlite3.Connection, title: str, text: str, source: str, category: str | None = None,
             tags: Sequence[str] = (), node: str | None = None, kind: str = "markdown") -> int:
    """Add or update a document from text (the brain, generated node pages); returns its id.

    ``source`` identifies it (re-adding the same source updates it; unchanged text is a
    no-op). Works inside or outside a transaction."""
    if not title.strip() or not source.strip():
        raise BadRequest("add_text needs a title and a source")
    if category is not None:
        category = check_category(db, category)
    body = text.strip()
    digest = sha256_text(f"{title}\n{category}\n{sorted(tags)}\n{node}\n{body}")
    doc = Doc(source=source, kind=kind, title=title.strip(), body=body, sha256=digest,
              size=len(body.encode()), category=category, tags=list(tags), node=node)
    cats = categories(db)
    return save(db, doc, cats, classify.load_model(db))[1]
