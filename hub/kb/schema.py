"""The kb capability's tables and views, as named migrations (see hub/schema.py)."""

from __future__ import annotations

import sqlite3

from hub.schema import migration_set, script

MIGRATIONS, migration = migration_set()


@migration
def m500_kb(db: sqlite3.Connection) -> None:
    """Knowledge base: documents, their passages (FTS5, kept in sync by triggers), tags,
    wikilinks, categories and the examples the classifier learns from. See docs/kb.md."""
    script(db,
        """
        CREATE TABLE kb_categories (
            name TEXT PRIMARY KEY,
            active INTEGER NOT NULL DEFAULT 1
        );
        INSERT INTO kb_categories (name) VALUES ('hardware'), ('networking'), ('storage'),
            ('services'), ('security'), ('how-to'), ('snippet'), ('note');
        -- One row per note, page, clipping or snippet. body is the readable text as markdown.
        CREATE TABLE kb_documents (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL UNIQUE,      -- absolute path, URL, or api:NAME
            kind TEXT NOT NULL,               -- markdown, text, html, code
            language TEXT,                    -- for code snippets
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            category TEXT NOT NULL REFERENCES kb_categories(name),
            category_source TEXT NOT NULL,    -- given, person, learned, rules, model, default
            node TEXT,
            date REAL NOT NULL,               -- front matter date, else file mtime, else added
            added REAL NOT NULL,
            updated REAL NOT NULL,
            frontmatter TEXT                  -- JSON
        );
        CREATE INDEX kb_documents_category ON kb_documents(category);
        CREATE INDEX kb_documents_node ON kb_documents(node);
        CREATE INDEX kb_documents_date ON kb_documents(date);
        CREATE TABLE kb_passages (
            id INTEGER PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES kb_documents(id) ON DELETE CASCADE,
            ord INTEGER NOT NULL,
            heading_path TEXT NOT NULL,       -- 'Title > Section > Subsection'
            text TEXT NOT NULL,
            UNIQUE (document_id, ord)
        );
        CREATE TABLE kb_tags (
            document_id INTEGER NOT NULL REFERENCES kb_documents(id) ON DELETE CASCADE,
            tag TEXT NOT NULL,
            PRIMARY KEY (document_id, tag)
        ) WITHOUT ROWID;
        CREATE INDEX kb_tags_tag ON kb_tags(tag);
        CREATE TABLE kb_links (
            document_id INTEGER NOT NULL REFERENCES kb_documents(id) ON DELETE CASCADE,
            target TEXT NOT NULL,             -- [[wikilink]] target as written
            PRIMARY KEY (document_id, target)
        ) WITHOUT ROWID;
        -- What the classifier learns from: categories a person set or a source declared.
        -- Kept (document_id NULL) when the document goes, so a lesson is not forgotten.
        CREATE TABLE kb_training (
            id INTEGER PRIMARY KEY,
            document_id INTEGER UNIQUE REFERENCES kb_documents(id) ON DELETE SET NULL,
            category TEXT NOT NULL REFERENCES kb_categories(name),
            source TEXT NOT NULL,             -- person, given
            text TEXT NOT NULL,
            created REAL NOT NULL
        );
        -- Optional passage embeddings for hybrid ranking (model = GGUF file sha256 prefix).
        CREATE TABLE kb_embeddings (
            passage_id INTEGER PRIMARY KEY REFERENCES kb_passages(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            vector BLOB NOT NULL
        );
        CREATE VIRTUAL TABLE kb_passages_fts USING fts5(
            heading_path, text, content='kb_passages', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        -- headings (which carry the title) weigh more than body text
        INSERT INTO kb_passages_fts (kb_passages_fts, rank) VALUES ('rank', 'bm25(3.0, 1.0)');
        CREATE TRIGGER kb_passages_ai AFTER INSERT ON kb_passages BEGIN
            INSERT INTO kb_passages_fts (rowid, heading_path, text)
            VALUES (new.id, new.heading_path, new.text);
        END;
        CREATE TRIGGER kb_passages_ad AFTER DELETE ON kb_passages BEGIN
            INSERT INTO kb_passages_fts (kb_passages_fts, rowid, heading_path, text)
            VALUES ('delete', old.id, old.heading_path, old.text);
        END;
        CREATE TRIGGER kb_passages_au AFTER UPDATE ON kb_passages BEGIN
            INSERT INTO kb_passages_fts (kb_passages_fts, rowid, heading_path, text)
            VALUES ('delete', old.id, old.heading_path, old.text);
            INSERT INTO kb_passages_fts (rowid, heading_path, text)
            VALUES (new.id, new.heading_path, new.text);
        END;
        """
    )


# Views: one definition each. hub.schema.migrate (re)creates a view after the migrations
# whenever its stored SQL differs from this; a migration never creates or drops one.
VIEWS = {
    "kb_search_passages": """
        SELECT p.id AS passage_id, d.id AS document_id, d.title, p.heading_path, p.text,
               d.category, d.node, d.source, datetime(d.date, 'unixepoch') AS date
        FROM kb_passages p JOIN kb_documents d ON d.id = p.document_id
    """,
}
