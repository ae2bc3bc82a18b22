"""The project's documentation (docs/*.md) served by the hub itself, so the home page can link
it on a machine with no internet. Markdown is rendered with raw HTML escaped."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from markdown_it import MarkdownIt

from hub.paths import shipped

_md = MarkdownIt("commonmark", {"html": False}).enable("table")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]*\.md$")
IMAGE = re.compile(r"^[a-z0-9][a-z0-9-]*\.png$")


def folder() -> Path:
    return shipped("docs")


def pages() -> list[tuple[str, str]]:
    """(file name, title) of every page, by name."""
    out = []
    for p in sorted(folder().glob("*.md")):
        first = p.read_text(encoding="utf-8").lstrip().split("\n", 1)[0]
        out.append((p.name, first.lstrip("# ").strip() or p.stem))
    return out


def page(name: str) -> str | None:
    """The page as HTML, or None for a name that is not a page here (no paths, no dots)."""
    if not NAME.match(name) or not (folder() / name).is_file():
        return None
    return _render(name, (folder() / name).stat().st_mtime)


@lru_cache(maxsize=64)
def _render(name: str, _mtime: float) -> str:
    return _md.render((folder() / name).read_text(encoding="utf-8"))


def image(name: str) -> Path | None:
    p = folder() / "img" / name
    return p if IMAGE.match(name) and p.is_file() else None
