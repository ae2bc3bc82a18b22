"""A small deterministic BM25 ranker: what carries a weak model (and stands in for none).

Used to order a rule's candidate playbooks by how well their descriptions match the
evidence, and to shortlist query templates for a question before the model picks one.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+")
STOP = frozenset(
    "a an and are as at be by do does for from has have how i in is it its me my of on or "
    "so that the their this to was were what where which why will with you your "
    "any all can there than then them these those into over per".split()
)
# A light stemmer is enough for short technical text: "disks" ~ "disk", "installed" ~ "install".
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ed", "es", "s")


def stem(w: str) -> str:
    for suf in _SUFFIXES:
        if len(w) > len(suf) + 2 and w.endswith(suf):
            return w[: -len(suf)] + ("y" if suf == "ies" else "")
    return w


def tokens(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOP]


class BM25:
    def __init__(self, docs: Sequence[str], k1: float = 1.2, b: float = 0.6):
        self.docs = [tokens(d) for d in docs]
        self.k1, self.b = k1, b
        self.avg = sum(len(d) for d in self.docs) / max(1, len(self.docs))
        df: Counter = Counter()
        for d in self.docs:
            df.update(set(d))
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}
        self.tf = [Counter(d) for d in self.docs]

    def scores(self, query: str) -> list[float]:
        q = tokens(query)
        out = []
        for tf, d in zip(self.tf, self.docs, strict=True):
            s = 0.0
            norm = self.k1 * (1 - self.b + self.b * len(d) / (self.avg or 1))
            for t in q:
                f = tf.get(t)
                if f:
                    s += self.idf[t] * f * (self.k1 + 1) / (f + norm)
            out.append(s)
        return out

    def rank(self, query: str) -> list[tuple[int, float]]:
        """(doc index, score), best first; ties keep the documents' own order."""
        sc = self.scores(query)
        return sorted(enumerate(sc), key=lambda p: (-p[1], p[0]))
