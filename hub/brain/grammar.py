"""JSON schema -> a GBNF grammar that the installed llama.cpp accepts, checked before use.

llama-cpp-python's converter copies a regex escape such as ``\\.`` into a GBNF string
literal, where llama.cpp 0.3.x knows no such escape: the parser fails, the sampler comes back
NULL and the next call dereferences it (SIGSEGV; issue 18, ``restart-unit`` with a unit named
``plexmediaserver.service``). So patterns are first rewritten into an equivalent shape the
converter renders safely (an escaped literal becomes a one-character class), every grammar is
compiled by llama.cpp itself before a sampler is built from it, and a grammar it still refuses
loses its patterns (then everything) rather than reaching the sampler. Loosening here never
loosens what is accepted: every answer is validated again in full against the playbook header.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Escapes a GBNF literal or class may hold; anything else after a backslash is refused.
_CLASS_ESCAPES = {"d": "0-9", "w": "A-Za-z0-9_", "s": " \\t\\n\\r"}


def safe_pattern(p: Any) -> bool:
    """Whether a regex can become a grammar rule that still ends the JSON string: a bare ``.``
    also matches ``"``, so ``^/tmp(/.*)?$`` would let the model run on past the closing quote
    and write anything. Character classes and escapes are fine."""
    if not isinstance(p, str):
        return False
    bare = re.sub(r"\\.|\[(?:\\.|[^\]])*\]", "", p)
    return "." not in bare


def translate_pattern(p: str) -> str | None:
    """The same regex with every escaped literal outside a class written as a one-character
    class (``\\.`` -> ``[.]``) and ``\\d``/``\\w``/``\\s`` spelled out; None when it holds a
    construct the converter cannot render (backreferences, lookaround, ``\\b`` ...)."""
    out, i, n = [], 0, len(p)
    in_class = False
    while i < n:
        ch = p[i]
        if ch == "\\" and i + 1 < n:
            nx = p[i + 1]
            i += 2
            if nx in _CLASS_ESCAPES:
                out.append(_CLASS_ESCAPES[nx] if in_class else f"[{_CLASS_ESCAPES[nx]}]")
            elif nx.isalnum():
                return None  # \b \B \1 \D \W \S \x.. : not worth a risky translation
            elif in_class:
                out.append("\\" + nx if nx in "]\\^-" else nx)
            elif nx in "]\\^-":
                return None  # "[\]]" and friends: drop rather than guess the converter's taste
            else:
                out.append(f"[{nx}]")
            continue
        if ch == "(" and not in_class and p.startswith("(?", i):
            if not p.startswith("(?:", i):
                return None  # lookaround, named groups, inline flags
            out.append("(")  # the converter has no non-capturing groups; for matching, same thing
            i += 3
            continue
        if in_class:
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            if i < n and p[i] == "^":
                out.append("^")
                i += 1
            if i < n and p[i] == "]":  # a leading "]" is a literal
                out.append("\\]")
                i += 1
            continue
        out.append(ch)
        i += 1
    return None if in_class else "".join(out)


def grammar_schema(schema: Any, patterns: bool = False) -> Any:
    """A copy of ``schema`` for the llama.cpp grammar converter. Long ``maxLength`` bounds
    become hundreds of nested grammar rules that make sampling crawl, so they are left to
    max_tokens; with ``patterns`` the regexes that can stay (translated) stay, the rest go."""
    if isinstance(schema, dict):
        out = {}
        for k, v in schema.items():
            if k in ("$schema", "format", "description", "default"):
                continue
            if k == "pattern":
                t = translate_pattern(v) if patterns and safe_pattern(v) else None
                if t is not None:
                    out[k] = t
                continue
            if k == "maxLength" and isinstance(v, int) and v > 32:
                continue
            out[k] = grammar_schema(v, patterns)
        return out
    if isinstance(schema, list):
        return [grammar_schema(v, patterns) for v in schema]
    return schema


SPACE_RULE = re.compile(r'^space ::= .*$', re.M)


def to_gbnf(schema: dict, patterns: bool = True) -> str:
    """GBNF text for ``schema``; ValueError when the converter itself gives up. The JSON is
    compact: the converter lets the model put a space after every brace, colon and comma, and
    each one is a generated token (about a quarter of a decision's answer)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return SPACE_RULE.sub('space ::= ""', json_schema_to_gbnf(json.dumps(grammar_schema(schema, patterns))))
    except (AssertionError, ValueError, KeyError, NotImplementedError, RecursionError, TypeError) as e:
        raise ValueError(f"schema not expressible as a grammar: {type(e).__name__}: {e}") from None


def compiles(vocab: Any, gbnf: str) -> bool:
    """Whether llama.cpp's own parser takes ``gbnf`` (for this vocabulary). It reports a
    failure by returning NULL, which is what must never reach the sampler."""
    import llama_cpp

    smp = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    if not smp:
        return False
    llama_cpp.llama_sampler_free(smp)
    return True


def build(vocab: Any, schema: dict) -> tuple[str, str]:
    """(gbnf, how) for ``schema`` that llama.cpp has compiled: ``how`` is "patterns" (the
    translatable regexes kept), "no patterns" or raises ValueError naming why neither took."""
    errors = []
    for patterns in (True, False):
        try:
            g = to_gbnf(schema, patterns)
        except ValueError as e:
            errors.append(str(e))
            continue
        if compiles(vocab, g):
            return g, "patterns" if patterns else "no patterns"
        errors.append(f"llama.cpp refused the grammar ({'with' if patterns else 'without'} patterns)")
    raise ValueError("; ".join(errors))
