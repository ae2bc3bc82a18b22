"""A rule's sliding window: count, rate, sum, avg, min, max and predict in O(1) per event."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

MAX_WINDOW = 200_000  # entries per instance: a flood sheds its oldest evidence, not memory


class Window:
    """A sliding window of (ts, value, event id) with running sums, so count, rate, sum,
    avg and predict cost O(1) per event and min/max are recomputed only when the extreme
    leaves. Times are kept relative to ``t0`` so the sums of squares stay precise."""

    __slots__ = ("items", "n", "st", "sv", "stt", "stv", "lo", "hi", "t0")

    def __init__(self) -> None:
        self.items: deque = deque()
        self._reset()

    def _reset(self) -> None:
        self.n = 0
        self.st = self.sv = self.stt = self.stv = 0.0
        self.lo = self.hi = None
        self.t0: float | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[float, Any, int | None]]:
        return iter(self.items)

    def add(self, t: float, v: Any, eid: int | None) -> None:
        self.items.append((t, v, eid))
        if type(v) in (int, float):
            if self.t0 is None:
                self.t0 = t
            x = t - self.t0
            self.n += 1
            self.st += x
            self.sv += v
            self.stt += x * x
            self.stv += x * v
            if self.lo is not None and v < self.lo:
                self.lo = v
            if self.hi is not None and v > self.hi:
                self.hi = v
            if self.n == 1:
                self.lo = self.hi = v
        if len(self.items) > MAX_WINDOW:
            self._drop()

    def _drop(self) -> None:
        t, v, _ = self.items.popleft()
        if type(v) in (int, float):
            x = t - self.t0
            self.n -= 1
            self.st -= x
            self.sv -= v
            self.stt -= x * x
            self.stv -= x * v
            if v == self.lo or v == self.hi:
                self.lo = self.hi = None  # recomputed on demand

    def expire(self, before: float) -> bool:
        items, changed = self.items, False
        while items and items[0][0] <= before:
            self._drop()
            changed = True
        if not items:
            self._reset()
        return changed

    def _extremes(self) -> None:
        vals = [v for _, v, _ in self.items if type(v) in (int, float)]
        self.lo, self.hi = (min(vals), max(vals)) if vals else (None, None)

    def value(self, fn: str, now: float, span: float, horizon: float) -> float | None:
        if fn == "count":
            return float(len(self.items))
        if fn == "rate":
            return len(self.items) / span
        n = self.n
        if n == 0:
            return None
        if fn == "sum":
            return float(self.sv)
        if fn == "avg":
            return self.sv / n
        if fn in ("min", "max"):
            if self.lo is None:
                self._extremes()
            return float(self.lo if fn == "min" else self.hi)  # type: ignore[arg-type]
        # predict: least-squares line through the window, read at now + horizon
        if n < 2 or self.t0 is None or self.items[-1][0] - self.items[0][0] < span / 4:
            return None  # too little history: a line through two close points predicts noise
        var = self.stt - self.st * self.st / n
        if var <= 1e-9:
            return None
        slope = (self.stv - self.st * self.sv / n) / var
        mt, mv = self.st / n, self.sv / n
        return mv + slope * (now + horizon - self.t0 - mt)
