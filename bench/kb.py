"""python -m bench kb [--passages N] [--ingest-docs N] [--hybrid]

Knowledge-base benchmark on the labelled set in bench/data/kb (documents written for this,
known-item queries -> the document that answers them, a category per document):

- top3: share of queries whose document is among the first three distinct documents
- categorise_accuracy: the no-model classifier, leave-one-out (trained on the other
  documents' categories, as after a person has categorised them); the keyword rules alone
  (the cold start) are reported as categorise_accuracy_rules
- docs_per_s: `kb add` of a folder of documents (no model), against a baseline that only
  reads the same files and inserts them into a plain table
- search_p95_ms: the labelled queries against the labelled set plus generated passages up
  to --passages (default 100,000), against a baseline of FTS5 alone ranking the same
  expression (no joins, filters, per-document limit or snippets)
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import yaml

import hub.kb as kb
from hub.kb import classify, ingest
from hub.kb.search import fts_query
from hub.store import open_db

DATA = Path(__file__).parent / "data" / "kb"


def load_labels() -> dict:
    return yaml.safe_load((DATA / "labels.yaml").read_text())


def ranked_docs(db, q: str, k: int = 3, **kw) -> list[str]:
    return [Path(r["source"]).name for r in kb.search(db, q, k, **kw)]


def quality(db, labels: dict, **kw) -> dict:
    hits1 = hits3 = 0
    rr = 0.0
    misses = []
    for item in labels["queries"]:
        got = ranked_docs(db, item["q"], 10, **kw)
        if got[:1] == [item["doc"]]:
            hits1 += 1
        if item["doc"] in got[:3]:
            hits3 += 1
        else:
            misses.append((item["q"], item["doc"], got[:3]))
        if item["doc"] in got:
            rr += 1 / (got.index(item["doc"]) + 1)
    n = len(labels["queries"])
    return {"top1": hits1 / n, "top3": hits3 / n, "mrr": rr / n, "misses": misses}


def categorise(labels: dict) -> dict:
    docs = []
    for name, cat in labels["documents"].items():
        d = ingest.from_path(DATA / "docs" / name)
        docs.append((d, cat))
    cats = list(classify.DEFAULT_CATEGORIES)
    rules = sum(classify.choose(d.title, d.body, d.kind, cats, None)[0] == c for d, c in docs)
    learned = nb_only = 0
    for i, (d, c) in enumerate(docs):
        model = classify.Model.train((cat, classify.training_text(o.title, o.body))
                                     for j, (o, cat) in enumerate(docs) if j != i)
        learned += classify.choose(d.title, d.body, d.kind, cats, model)[0] == c
        nb_only += classify.choose(d.title, d.body, d.kind, cats, model, use_rules=False)[0] == c
    n = len(docs)
    return {"categorise_accuracy": learned / n, "categorise_accuracy_rules": rules / n,
            "categorise_accuracy_nb_only": nb_only / n}


def ingest_speed(tmp: Path, n_docs: int) -> dict:
    """kb add of n_docs files (copies of the labelled set, each made unique) vs a bare baseline."""
    src = sorted((DATA / "docs").iterdir())
    folder = tmp / "many"
    folder.mkdir()
    for i in range(n_docs):
        f = src[i % len(src)]
        (folder / f"{i:05d}-{f.name}").write_bytes(f.read_bytes() + f"\n\ncopy {i}\n".encode())
    base = sqlite3.connect(tmp / "baseline.db", isolation_level=None)
    base.execute("PRAGMA journal_mode = WAL")
    base.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, source TEXT UNIQUE, body TEXT)")
    t0 = time.perf_counter()
    base.execute("BEGIN")
    for p in sorted(folder.iterdir()):
        base.execute("INSERT INTO docs (source, body) VALUES (?, ?)", (str(p), p.read_text()))
    base.execute("COMMIT")
    baseline = n_docs / (time.perf_counter() - t0)
    base.close()
    db = open_db(tmp / "ingest.db")
    t0 = time.perf_counter()
    s = kb.add(db, [str(folder)])
    elapsed = time.perf_counter() - t0
    assert len(s.added) == n_docs, s.as_dict()["skipped"][:3]
    t0 = time.perf_counter()
    again = kb.add(db, [str(folder)])
    unchanged_s = time.perf_counter() - t0
    assert len(again.unchanged) == n_docs
    db.close()
    return {"docs_per_s": n_docs / elapsed, "baseline_docs_per_s": baseline,
            "readd_unchanged_docs_per_s": n_docs / unchanged_s}


def fill(db, target: int, seed: int = 7, adversarial: bool = False) -> int:
    """Generated passages up to ``target`` in total. Words follow Zipf's law over a 60,000-word
    vocabulary in which every word of the labelled corpus sits at a random rank, as words do in
    real text: a few become very common (the slow case for OR queries), most stay rare.
    ``adversarial``: only the labelled corpus's words, at their own frequencies, so nearly
    every query word is in a large share of passages (a worst case, not a realistic one)."""
    have = db.execute("SELECT count(*) FROM kb_passages").fetchone()[0]
    corpus = sorted(set(classify.tokens(" ".join(r[0] for r in db.execute("SELECT text FROM kb_passages")))))
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = corpus + ["".join(rng.choices(letters, k=rng.randint(3, 10))) for _ in range(60_000 - len(corpus))]
    rng.shuffle(vocab)
    cum, acc = [], 0.0
    for rank in range(len(vocab)):
        acc += 1.0 / (rank + 2.7)  # Zipf-Mandelbrot
        cum.append(acc)

    corpus_all = classify.tokens(" ".join(r[0] for r in db.execute("SELECT text FROM kb_passages")))

    def words(k: int) -> list[str]:
        if adversarial:
            return rng.choices(corpus_all, k=k)
        return rng.choices(vocab, cum_weights=cum, k=k)

    per_doc = 10
    n_docs = max(0, (target - have + per_doc - 1) // per_doc)
    now = time.time()
    db.execute("BEGIN")
    for d in range(n_docs):
        title = " ".join(words(4)).capitalize()
        cur = db.execute(
            "INSERT INTO kb_documents (source, kind, title, body, sha256, size, category, category_source,"
            " date, added, updated) VALUES (?, 'markdown', ?, '', ?, 0, ?, 'rules', ?, ?, ?)",
            (f"generated:{d}", title, f"g{d}", rng.choice(classify.DEFAULT_CATEGORIES),
             now - rng.random() * 3e7, now, now))
        doc_id = cur.lastrowid
        rows = [(doc_id, i, f"{title} > {' '.join(words(2))}", " ".join(words(rng.randint(40, 160))))
                for i in range(per_doc)]
        db.executemany("INSERT INTO kb_passages (document_id, ord, heading_path, text) VALUES (?, ?, ?, ?)", rows)
    db.execute("COMMIT")
    db.execute("INSERT INTO kb_passages_fts (kb_passages_fts) VALUES ('optimize')")
    return db.execute("SELECT count(*) FROM kb_passages").fetchone()[0]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def search_speed(db, labels: dict, rounds: int = 3) -> dict:
    qs = [q["q"] for q in labels["queries"]]
    cats = list(classify.DEFAULT_CATEGORIES)
    times, base = [], []
    for r in range(rounds):
        for i, q in enumerate(qs):
            kw = {"category": cats[i % len(cats)]} if r == rounds - 1 and i % 2 else {}
            t0 = time.perf_counter()
            kb.search(db, q, 5, **kw)
            times.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            db.execute("SELECT rowid FROM kb_passages_fts WHERE kb_passages_fts MATCH ? ORDER BY rank LIMIT 5",
                       (fts_query(q),)).fetchall()
            base.append((time.perf_counter() - t0) * 1000)
    return {"search_p50_ms": statistics.median(times), "search_p95_ms": pct(times, 95),
            "search_max_ms": max(times), "baseline_search_p95_ms": pct(base, 95)}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench kb")
    ap.add_argument("--passages", type=int, default=100_000)
    ap.add_argument("--ingest-docs", type=int, default=1000)
    ap.add_argument("--hybrid", action="store_true", help="also measure embedding fusion (slow)")
    ap.add_argument("--adversarial", action="store_true",
                    help="generated passages use only the labelled corpus's words (worst case)")
    ap.add_argument("--verbose", action="store_true", help="print the missed queries")
    args = ap.parse_args()
    labels = load_labels()
    out: dict = {"documents": len(labels["documents"]), "queries": len(labels["queries"])}
    tmp = Path(tempfile.mkdtemp(prefix="bench-kb-"))
    try:
        db = open_db(tmp / "labelled.db")
        s = kb.add(db, [str(DATA / "docs")])
        assert len(s.added) == len(labels["documents"]), s.as_dict()["skipped"]
        q = quality(db, labels)
        print(f"labelled set: top1 {q['top1']:.3f}  top3 {q['top3']:.3f}  mrr {q['mrr']:.3f}")
        for miss in q["misses"] if args.verbose else ():
            print("  miss:", miss)
        out.update(top1=q["top1"], top3=q["top3"], mrr=q["mrr"])
        if args.hybrid:
            from hub.kb import embed

            t0 = time.perf_counter()
            n = embed.embed_missing(db)
            hq = quality(db, labels, hybrid=True)
            print(f"hybrid (embedded {n} passages in {time.perf_counter() - t0:.1f}s): "
                  f"top1 {hq['top1']:.3f}  top3 {hq['top3']:.3f}  mrr {hq['mrr']:.3f}")
            out.update(top3_hybrid=hq["top3"], top1_hybrid=hq["top1"], mrr_hybrid=hq["mrr"])
        c = categorise(labels)
        print("categorise: learned (leave-one-out) {categorise_accuracy:.3f}, rules only "
              "{categorise_accuracy_rules:.3f}, naive Bayes without rule prior {categorise_accuracy_nb_only:.3f}".format(**c))
        out.update(c)
        out["categorise_accuracy_model"] = None  # the brain's model chooser is not measured here
        sp = ingest_speed(tmp, args.ingest_docs)
        print(f"ingest: {sp['docs_per_s']:.0f} docs/s (baseline read+insert {sp['baseline_docs_per_s']:.0f}/s), "
              f"re-add unchanged {sp['readd_unchanged_docs_per_s']:.0f}/s")
        out.update(sp, docs_per_s_ratio=sp["docs_per_s"] / sp["baseline_docs_per_s"])
        t0 = time.perf_counter()
        total = fill(db, args.passages, adversarial=args.adversarial)
        print(f"generated passages: {total} in total ({time.perf_counter() - t0:.1f}s)")
        q100 = quality(db, labels)
        ss = search_speed(db, labels)
        print(f"search at {total} passages: p50 {ss['search_p50_ms']:.1f} ms  p95 {ss['search_p95_ms']:.1f} ms "
              f"(baseline FTS5 alone p95 {ss['baseline_search_p95_ms']:.2f} ms); top3 {q100['top3']:.3f}")
        out.update(ss, passages=total, top3_at_scale=q100["top3"],
                   search_p95_ratio=ss["search_p95_ms"] / max(ss["baseline_search_p95_ms"], 1e-6))
        db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}))
