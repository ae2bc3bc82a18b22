"""The knowledge base: notes, runbooks, clippings and snippets, searchable by people and the
brain. See docs/kb.md.

For other features:
    hub.kb.search(db, "query", limit=5, category=..., tag=..., node=..., since=...) -> [dict]
    hub.kb.add_text(db, title, text, source, category=None, tags=(), node=None) -> doc id
Both take a sqlite3 connection; add_text works inside the hub writer's transaction
(``writer.run(lambda db: hub.kb.add_text(db, ...))``) or on its own.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from hub.kb import classify, ingest
from hub.kb.ingest import Skip, Summary
from hub.kb.search import search
from hub.kb.store import add_text, categories, remove, set_category, sync_categories
from hub.kb.token import existing_token

log = logging.getLogger(__name__)

__all__ = ["existing_token", "search", "add_text", "add", "remove", "set_category", "sync_categories",
           "categories", "Summary"]

BATCH = 200  # documents per transaction: short write locks, few commits


def add(db: sqlite3.Connection, targets: Iterable[str], *, category: str | None = None,
        tags: Iterable[str] = (), node: str | None = None, max_bytes: int = ingest.MAX_BYTES,
        progress: Callable[[str, int], None] | None = None,
        on_total: Callable[[int], None] | None = None) -> Summary:
    """Add files, folders (recursively) and URLs. ``db`` must not be inside a transaction.

    Unchanged sources are left alone, changed ones updated in place, and anything that
    cannot go in is listed in ``summary.skipped`` with its reason."""
    from hub.kb.store import check_category, save

    summary = Summary()
    if category is not None:
        category = check_category(db, category)
    tags = list(tags)
    items = list(ingest.expand(targets, summary))
    if on_total:
        on_total(len(items))
    cats = categories(db)
    model = classify.load_model(db)
    pending: list = []

    def flush() -> None:
        nonlocal model
        if not pending:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for doc in pending:
                try:
                    status, doc_id = save(db, doc, cats, model)
                except sqlite3.DatabaseError as e:
                    if isinstance(e, sqlite3.OperationalError):
                        raise  # locked, disk full: nothing more will go in
                    summary.skipped.append((doc.source, f"database refused it: {e}"))
                    continue
                getattr(summary, status).append((doc_id, doc.source))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        pending.clear()
        model = classify.load_model(db)  # declared categories may have taught it something

    for source, path in items:
        def warn(msg: str, source=source) -> None:
            summary.warnings.append((source, msg))

        try:
            kw: dict[str, Any] = dict(category=category, tags=tags, node=node, warn=warn, max_bytes=max_bytes)
            doc = ingest.fetch(source, **kw) if path is None else ingest.from_path(path, **kw)
            if doc.category is not None and doc.category not in cats:
                warn(f"category {doc.category!r} is not one of {', '.join(cats)}; classified instead")
                doc.category = None
            pending.append(doc)
        except Skip as e:
            summary.skipped.append((source, str(e)))
        if len(pending) >= BATCH:
            flush()
        if progress:
            progress(source, 1)
    flush()
    return summary
