"""Render knowledge-base documents as markdown in Datasette (kb_documents.body, and any
query column named body_markdown). Raw HTML in a note is escaped, never rendered: a
clipping from the web must not run script in the Datasette origin."""

from __future__ import annotations

from markdown_it import MarkdownIt
from markupsafe import Markup

from datasette import hookimpl

_md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def _safe_links(tokens, idx, options, env):
    # only http(s) and relative links stay clickable; javascript: and data: do not
    href = tokens[idx].attrGet("href") or ""
    if ":" in href.split("/")[0] and not href.lower().startswith(("http:", "https:")):
        tokens[idx].attrSet("href", "#")
    return _md.renderer.renderToken(tokens, idx, options, env)


_md.add_render_rule("link_open", _safe_links)


@hookimpl
def render_cell(value, column, table, database, datasette):
    if not isinstance(value, str):
        return None
    if (table == "kb_documents" and column == "body") or column == "body_markdown":
        return Markup(f'<div class="kb-markdown">{_md.render(value)}</div>')
    return None
