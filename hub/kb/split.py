"""Split a document into passages that keep their heading path.

A search hit should point at the section that answers, not at a 40-page document, so
markdown is cut at its headings (ATX ``#`` and setext underlines, never inside code
fences) and long sections are cut again at paragraph boundaries. Every passage carries
the path of headings above it, rooted at the document title: ``Title > Section > Sub``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CHARS = 1500  # a passage should fit a model prompt with room for several others
SEP = " > "

_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
# Markdown's line endings only: str.splitlines() also breaks at \x85, \u2028 and friends,
# which made "0\x85=" a setext heading and lost its text.
EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Passage:
    headings: tuple[str, ...]
    text: str

    @property
    def heading_path(self) -> str:
        return SEP.join(self.headings)


def _clean_heading(s: str) -> str:
    s = re.sub(r"[*_`]+", "", s)  # emphasis markers are noise in a path
    return re.sub(r"\s+", " ", s).strip()


def sections(text: str) -> list[tuple[tuple[str, ...], str]]:
    """[(heading stack, section text)] in document order; text before any heading has ()."""
    out: list[tuple[tuple[str, ...], str]] = []
    stack: list[tuple[int, str]] = []
    buf: list[str] = []
    fence: str | None = None

    def flush() -> None:
        body = "\n".join(buf).strip("\n")
        if body.strip():
            out.append((tuple(h for _, h in stack), body))
        buf.clear()

    def push(level: int, title: str) -> None:
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))

    for line in EOL.split(text):
        m = _FENCE.match(line)
        if m:
            mark = m.group(1)
            if fence is None:
                fence = mark[0] * 3
            elif mark.startswith(fence):
                fence = None
            buf.append(line)
            continue
        if fence is not None:
            buf.append(line)
            continue
        m = _ATX.match(line)
        if m and _clean_heading(m.group(2)):
            flush()
            push(len(m.group(1)), _clean_heading(m.group(2)))
            continue
        m = _SETEXT.match(line)
        # a setext heading is one line of text directly above the underline
        if m and buf and buf[-1].strip() and (len(buf) == 1 or not buf[-2].strip()):
            title = _clean_heading(buf[-1])
            if title and not title.startswith(("-", "*", "+", ">", "|")):
                buf.pop()
                flush()
                push(1 if m.group(1)[0] == "=" else 2, title)
                continue
        buf.append(line)
    flush()
    return out


def _chunks(body: str, limit: int) -> list[str]:
    """Cut at blank lines (outside fences) into pieces of at most ``limit`` characters."""
    if len(body) <= limit:
        return [body]
    paras: list[str] = []
    cur: list[str] = []
    fence = False
    for line in EOL.split(body):
        if _FENCE.match(line):
            fence = not fence
        if not line.strip() and not fence and cur:
            paras.append("\n".join(cur))
            cur = []
        elif line.strip() or cur:
            cur.append(line)
    if cur:
        paras.append("\n".join(cur))
    out: list[str] = []
    acc = ""
    for p in paras:
        while len(p) > limit:  # one huge paragraph or code block: cut at a line end if we can
            cut = p.rfind("\n", 0, limit)
            if cut < limit // 3:
                cut = p.rfind(" ", 0, limit)
            if cut < limit // 3:
                cut = limit
            if acc:
                out.append(acc)
                acc = ""
            out.append(p[:cut].rstrip())
            p = p[cut:].lstrip("\n ")
        if acc and len(acc) + 2 + len(p) > limit:
            out.append(acc)
            acc = p
        else:
            acc = f"{acc}\n\n{p}" if acc else p
    if acc.strip():
        out.append(acc)
    return out


def split_markdown(title: str, text: str, limit: int = MAX_CHARS) -> list[Passage]:
    out: list[Passage] = []
    for heads, body in sections(text):
        # the document's own H1 usually repeats its title; do not show it twice
        if heads and heads[0].casefold() == title.casefold():
            heads = heads[1:]
        path = (title, *heads)
        out.extend(Passage(path, c) for c in _chunks(body, limit) if c.strip())
    if not out and title.strip():
        out.append(Passage((title,), title))
    return out


def split_plain(title: str, text: str, limit: int = MAX_CHARS) -> list[Passage]:
    """Plain text and code: no headings to follow, only paragraph-sized pieces."""
    return [Passage((title,), c) for c in _chunks(text.strip("\n"), limit) if c.strip()] or [
        Passage((title,), title)
    ]
