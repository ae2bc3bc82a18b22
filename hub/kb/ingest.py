"""Turning files, folders and URLs into knowledge-base documents.

Markdown (with Obsidian front matter, #tags and [[wikilinks]]), plain text, HTML
clippings and code files are read; anything else -- binary, too large, not UTF-8,
unreadable, empty -- is skipped with a reason naming the file, and the rest goes in.
URLs are fetched only when the user names them; nothing else here touches the network.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import yaml

from hub.kb import html as htmlx
from hub.kb.store import Doc

log = logging.getLogger(__name__)

MAX_BYTES = 2 * 1024 * 1024
MARKDOWN = {".md", ".markdown", ".mdown", ".mkd", ".mdx"}
TEXT = {".txt", ".text", ".rst", ".adoc", ".org"}
HTML = {".html", ".htm", ".xhtml"}
CODE = {
    ".py": "python", ".sh": "bash", ".bash": "bash", ".zsh": "zsh", ".fish": "fish",
    ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json", ".ini": "ini",
    ".conf": "conf", ".cfg": "conf", ".nix": "nix", ".js": "javascript", ".ts": "typescript",
    ".go": "go", ".rs": "rust", ".c": "c", ".h": "c", ".cpp": "cpp", ".lua": "lua",
    ".sql": "sql", ".ps1": "powershell", ".rb": "ruby", ".pl": "perl", ".php": "php",
    ".java": "java", ".service": "systemd", ".timer": "systemd", ".socket": "systemd",
    ".mount": "systemd", ".nft": "nftables", ".j2": "jinja", ".tf": "terraform", ".hcl": "hcl",
    ".awk": "awk", ".vim": "vim", ".xml": "xml", ".env": "dotenv",
}
CODE_NAMES = {"dockerfile": "dockerfile", "makefile": "make", "caddyfile": "caddy",
              "vagrantfile": "ruby", "justfile": "just", "containerfile": "dockerfile"}
SKIP_DIRS = {".git", ".obsidian", ".trash", ".hg", ".svn", "node_modules", "__pycache__", ".venv"}


class Skip(Exception):
    """A source that cannot go in; the message is the reason shown to the user."""


@dataclass
class Summary:
    added: list[tuple[int, str]] = field(default_factory=list)
    updated: list[tuple[int, str]] = field(default_factory=list)
    unchanged: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "added": [{"id": i, "source": s} for i, s in self.added],
            "updated": [{"id": i, "source": s} for i, s in self.updated],
            "unchanged": [{"id": i, "source": s} for i, s in self.unchanged],
            "skipped": [{"source": s, "reason": r} for s, r in self.skipped],
            "warnings": [{"source": s, "warning": r} for s, r in self.warnings],
        }


def kind_of(path: Path) -> tuple[str, str | None] | None:
    suffix = path.suffix.lower()
    if suffix in MARKDOWN:
        return "markdown", None
    if suffix in TEXT:
        return "text", None
    if suffix in HTML:
        return "html", None
    if suffix in CODE:
        return "code", CODE[suffix]
    name = path.name.lower()
    if name in CODE_NAMES:
        return "code", CODE_NAMES[name]
    return None


def walk(root: Path) -> Iterator[Path]:
    """Supported files under ``root``, sorted, skipping VCS and editor folders."""
    for d, dirs, files in os.walk(root, onerror=None):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.startswith("."))
        for f in sorted(files):
            p = Path(d) / f
            if not f.startswith(".") and kind_of(p) is not None:
                yield p


def decode(raw: bytes, where: str, charset: str | None = None) -> str:
    if b"\x00" in raw[:8192] and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise Skip("binary file (NUL bytes)")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        enc = "utf-16"
    elif raw.startswith(b"\xef\xbb\xbf"):
        enc = "utf-8-sig"
    else:
        enc = charset or "utf-8"
    try:
        return raw.decode(enc)
    except LookupError:
        raise Skip(f"unknown character set {enc!r}") from None
    except UnicodeDecodeError as e:
        raise Skip(f"not valid {enc} (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                   "convert it to UTF-8") from None


_FRONT = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_WIKI = re.compile(r"(!?)\[\[([^\]|#\n]+)(?:#[^\]|\n]*)?(?:\|([^\]\n]+))?\]\]")
_INLINE_TAG = re.compile(r"(?<![\w#&/`'\"])#([A-Za-z][\w/-]{0,62})")
_FENCED = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def _as_list(v) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [x for x in re.split(r"[,\s]+", v) if x]
    if isinstance(v, list | tuple):
        return [str(x) for x in v if x is not None]
    return [str(v)]


def _date_of(v) -> float | None:
    if isinstance(v, datetime):
        return v.timestamp()
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day).timestamp()
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v.strip()).timestamp()
        except ValueError:
            return None
    return None


def parse_markdown(text: str, where: str, warn: Callable[[str], None]) -> dict:
    """Front matter, wikilinks and inline tags of a markdown note; returns the parts."""
    fm: dict = {}
    m = _FRONT.match(text)
    if m:
        try:
            loaded = yaml.safe_load(m.group(1))
            if isinstance(loaded, dict):
                fm = loaded
            elif loaded is not None:
                warn("front matter is not a mapping; ignored")
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" at line {mark.line + 2}" if mark is not None else ""
            warn(f"front matter is not valid YAML{line}; ignored")
        text = text[m.end():]
    links: list[str] = []

    def wiki(mm: re.Match) -> str:
        if mm.group(1):
            return ""  # ![[embed.png]]: an attachment, not text
        target = mm.group(2).strip()
        if target not in links:
            links.append(target)
        return (mm.group(3) or target).strip()

    text = _WIKI.sub(wiki, text)
    prose = _FENCED.sub("", text)
    tags = [t for line in prose.splitlines() if not line.lstrip().startswith("#")
            for t in _INLINE_TAG.findall(line)]
    tags += [t for line in prose.splitlines() if line.lstrip().startswith("#")
             for t in _INLINE_TAG.findall(line.lstrip().lstrip("#"))]
    return {"fm": fm, "text": text, "links": links, "tags": tags}


def _first_heading(text: str) -> str | None:
    m = re.search(r"^ {0,3}# +(.+?)\s*#*$", text, re.M)
    return m.group(1).strip() if m else None


def content_digest(raw: bytes, category: str | None = None, tags: Iterable[str] = (),
                   node: str | None = None) -> str:
    """What 'unchanged' means: the same bytes added with the same options."""
    meta = {"category": category, "tags": sorted(tags), "node": node}
    return hashlib.sha256(raw + b"\0" + json.dumps(meta).encode()).hexdigest()


def build(source: str, raw: bytes, kind: str, language: str | None, name: str, *,
          charset: str | None = None, mtime: float | None = None, category: str | None = None,
          tags: Iterable[str] = (), node: str | None = None,
          warn: Callable[[str], None] = lambda s: None, max_bytes: int = MAX_BYTES) -> Doc:
    """A Doc from raw bytes; raises Skip with the reason when it cannot go in."""
    if len(raw) > max_bytes:
        raise Skip(f"too large ({len(raw) / 1048576:.1f} MiB > {max_bytes / 1048576:.1f} MiB, setting kb_max_bytes)")
    if not raw.strip():
        raise Skip("empty file")
    if kind == "html" and charset is None:
        charset = htmlx.declared_charset(raw)
    text = decode(raw, source, charset).replace("\r\n", "\n")
    digest = content_digest(raw, category, tags, node)
    doc = Doc(source=source, kind=kind, title=name, body=text, sha256=digest, size=len(raw),
              language=language, category=category, tags=list(tags), node=node, date=mtime)
    if kind == "markdown":
        parts = parse_markdown(text, source, warn)
        fm = parts["fm"]
        doc.body, doc.links, doc.frontmatter = parts["text"].strip(), parts["links"], fm or None
        doc.tags += _as_list(fm.get("tags")) + _as_list(fm.get("tag")) + parts["tags"]
        doc.title = str(fm.get("title") or _first_heading(doc.body) or name)
        doc.node = node or (str(fm["node"]) if fm.get("node") else None)
        doc.date = _date_of(fm.get("date") or fm.get("created")) or mtime
        if category is None and fm.get("category"):
            doc.category = str(fm["category"]).strip().lower()
    elif kind == "html":
        title, body = htmlx.extract(text)
        if not body.strip():
            raise Skip("no readable text in the HTML")
        doc.title, doc.body = title or name, body
    elif kind == "code":
        doc.body = text.rstrip()
    else:
        doc.title = _first_line_title(text) or name
    if not doc.body.strip():
        raise Skip("no text left after front matter")
    return doc


def _first_line_title(text: str) -> str | None:
    """A plain-text note titled by its first short line (followed by a blank or underline)."""
    lines = text.lstrip().splitlines()
    if len(lines) >= 2 and 0 < len(lines[0].strip()) <= 80 and (
            not lines[1].strip() or set(lines[1].strip()) <= set("=-")):
        return lines[0].strip()
    return None


def from_path(path: Path, *, max_bytes: int = MAX_BYTES, **kw) -> Doc:
    kind = kind_of(path)
    if kind is None:
        raise Skip(f"unsupported file type {path.suffix or path.name!r}")
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            raise Skip("not a regular file")
        if st.st_size > max_bytes:
            raise Skip(f"too large ({st.st_size / 1048576:.1f} MiB > {max_bytes / 1048576:.1f} MiB, setting kb_max_bytes)")
        raw = path.read_bytes()
    except PermissionError:
        raise Skip("permission denied") from None
    except FileNotFoundError:
        raise Skip("no such file") from None
    except IsADirectoryError:
        raise Skip("is a directory") from None
    except OSError as e:
        raise Skip(f"cannot read: {e.strerror or e}") from None
    return build(str(path), raw, kind[0], kind[1], path.name if kind[0] == "code" else path.stem,
                 mtime=st.st_mtime, max_bytes=max_bytes, **kw)


def is_url(s: str) -> bool:
    return bool(re.match(r"^https?://", s, re.I))


def _origin(url: str) -> tuple[str, int]:
    u = urllib.parse.urlsplit(url)
    return (u.hostname or "").lower(), u.port or (443 if u.scheme.lower() == "https" else 80)


def internal(host: str) -> str | None:
    """The first loopback, link-local, private or otherwise non-public address ``host``
    resolves to, or None when all of them are public."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None  # it cannot be fetched either; urllib will say why
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if not addr.is_global or addr.is_multicast:
            return str(addr)
    return None


class _Redirects(urllib.request.HTTPRedirectHandler):
    """A redirect may not lead into this machine or the LAN (the hub's own Datasette, a
    router's admin page, cloud metadata) unless it stays on the host the administrator named
    (http -> https on it included)."""

    def __init__(self, first: str):
        self.named = _origin(first)[0]

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        host, _port = _origin(newurl)
        if host != self.named and (addr := internal(host)) is not None:
            raise Skip(f"redirected to {newurl[:200]!r} ({addr}: loopback, link-local or private);"
                       " add that URL itself if you mean it")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str, *, max_bytes: int = MAX_BYTES, timeout: float = 20.0, **kw) -> Doc:
    """Fetch one URL the user named. Only http(s); the body is capped at ``max_bytes``;
    redirects into internal addresses are refused (see _Redirects)."""
    req = urllib.request.Request(url, headers={"User-Agent": "homelab-kb/0.1",
                                               "Accept": "text/html, text/markdown, text/plain"})
    opener = urllib.request.build_opener(_Redirects(url))
    try:
        with opener.open(req, timeout=timeout) as resp:
            ctype = resp.headers.get_content_type()
            charset = resp.headers.get_content_charset()
            raw = resp.read(max_bytes + 1)
            final = resp.geturl()
    except urllib.error.HTTPError as e:
        raise Skip(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise Skip(f"cannot fetch: {e.reason}") from None
    except (TimeoutError, OSError) as e:
        raise Skip(f"cannot fetch: {e}") from None
    if not is_url(final):
        raise Skip(f"redirected to a non-HTTP URL {final!r}")
    if len(raw) > max_bytes:
        raise Skip(f"too large (over {max_bytes / 1048576:.1f} MiB, setting kb_max_bytes)")
    kinds = {"text/html": "html", "application/xhtml+xml": "html", "text/markdown": "markdown",
             "text/x-markdown": "markdown", "text/plain": "text"}
    kind = kinds.get(ctype)
    if kind is None:
        raise Skip(f"unsupported content type {ctype!r}")
    name = url.rstrip("/").rsplit("/", 1)[-1] or url
    if kind == "text" and url.lower().endswith(tuple(MARKDOWN)):
        kind = "markdown"
    return build(url, raw, kind, None, name, charset=charset, mtime=time.time(),
                 max_bytes=max_bytes, **kw)


def expand(targets: Iterable[str], summary: Summary) -> Iterator[tuple[str, Path | None]]:
    """(source, path) for every file to read: folders recursively, URLs as given."""
    for t in targets:
        if is_url(t):
            yield t, None
            continue
        p = Path(t).expanduser()
        try:
            p = p.resolve()
            if p.is_dir():
                yield from ((str(f), f) for f in walk(p))
            elif p.exists():
                yield str(p), p
            else:
                summary.skipped.append((str(p), "no such file or directory"))
        except PermissionError:
            summary.skipped.append((str(p), "permission denied"))
        except RuntimeError:  # Python 3.11's resolve() on a symlink loop
            summary.skipped.append((str(p), "symbolic link loop"))
        except OSError as e:
            summary.skipped.append((str(p), f"cannot read: {e.strerror or e}"))
