"""Readable text from an HTML page (a saved clipping or a fetched URL), as markdown.

The standard library's tolerant parser is enough here: it never raises on broken markup
(unclosed tags, stray end tags, truncated files), and a clipping needs only a title,
headings (so passages keep their heading path), paragraphs, lists and code blocks.
Navigation, scripts, styles, forms and page chrome are dropped; when the page marks its
content with <article> or <main>, only that is kept.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# content in these never reaches the reader
_DROP = {"script", "style", "noscript", "template", "svg", "canvas", "iframe", "object",
         "form", "select", "button", "nav", "aside", "footer", "head"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
         "param", "source", "track", "wbr"}
_BLOCK = {"p", "div", "section", "article", "main", "ul", "ol", "dl", "table", "tr",
          "blockquote", "figure", "figcaption", "details", "summary", "dd", "dt", "body"}
_HEAD = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.og_title = ""
        self._in_title = False
        self._drop = 0  # depth inside dropped elements
        self._stack: list[str] = []
        self._pre = 0
        self._heading: int | None = None
        self.parts: list[str] = []  # the whole page
        self.main: list[str] | None = None  # <article>/<main>, when present
        self._main_depth: int | None = None

    # -- helpers ------------------------------------------------------------------------

    def _out(self, s: str) -> None:
        self.parts.append(s)
        if self._main_depth is not None and self.main is not None:
            self.main.append(s)

    def _block(self) -> None:
        self._out("\n\n")

    # -- parser callbacks ---------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta":
            a = dict(attrs)
            content = a.get("content")
            if a.get("property") == "og:title" and content:
                self.og_title = content.strip()
            return
        if tag in _VOID:
            if tag == "br" and not self._drop:
                self._out("\n")
            return
        self._stack.append(tag)
        if tag == "title":
            self._in_title = True
            return
        if self._drop or tag in _DROP:
            self._drop += 1
            return
        if tag in ("article", "main") and self._main_depth is None and self.main is None:
            self.main = []
            self._main_depth = len(self._stack)
        if tag in _HEAD:
            self._block()
            self._heading = _HEAD[tag]
            self._out("#" * _HEAD[tag] + " ")
        elif tag == "pre":
            self._block()
            self._out("```\n")
            self._pre += 1
        elif tag == "li":
            self._out("\n- ")
        elif tag in ("td", "th"):
            self._out(" | ")
        elif tag == "code" and not self._pre:
            self._out("`")
        elif tag in _BLOCK:
            self._block()

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID or tag not in self._stack:
            return  # a stray end tag: ignore rather than unwind the stack
        while self._stack:
            top = self._stack.pop()
            self._close(top)
            if top == tag:
                break

    def _close(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
            return
        if self._drop:
            self._drop -= 1
            return
        if tag in _HEAD:
            self._heading = None
            self._block()
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
            self._out("\n```")
            self._block()
        elif tag == "code" and not self._pre:
            self._out("`")
        elif tag in _BLOCK:
            self._block()
        if self._main_depth is not None and len(self._stack) < self._main_depth:
            self._main_depth = None  # left <article>/<main>; keep only the first

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
            return
        if self._drop:
            return
        self._out(data if self._pre else re.sub(r"\s+", " ", data))


def _tidy(parts: list[str]) -> str:
    text = "".join(parts)
    lines = [ln.rstrip() for ln in text.splitlines()]
    out: list[str] = []
    in_pre = False
    for ln in lines:
        if ln.strip() == "```":
            in_pre = not in_pre
        out.append(ln if in_pre else ln.strip())
    text = "\n".join(out)
    text = re.sub(r"^(#{1,6}) +\n+", "", text, flags=re.M)  # headings left empty
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def extract(html: str) -> tuple[str, str]:
    """(title, readable markdown) of an HTML document; either may be empty."""
    p = _Extractor()
    p.feed(html)
    p.close()
    body = _tidy(p.main) if p.main and len(_tidy(p.main)) > 200 else _tidy(p.parts)
    title = re.sub(r"\s+", " ", p.og_title or p.title).strip()
    if not title:
        m = re.search(r"^# (.+)$", body, re.M)
        title = m.group(1).strip() if m else ""
    return title, body


_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)


def declared_charset(raw: bytes) -> str | None:
    m = _CHARSET.search(raw[:4096])
    return m.group(1).decode("ascii").lower() if m else None
