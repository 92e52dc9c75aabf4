"""Small live figures: a rolling window of samples with percentiles."""

from __future__ import annotations

from collections import deque


class RollingPercentiles:
    """The last `size` samples; percentiles computed on demand (reads are rare, adds hot)."""

    __slots__ = ("_samples", "count")

    def __init__(self, size: int = 2048) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self.count = 0

    def add(self, value: float) -> None:
        self._samples.append(value)
        self.count += 1

    def percentiles(self, *qs: float) -> dict[str, float]:
        ordered = sorted(self._samples)
        if not ordered:
            return {f"p{q:g}": 0.0 for q in qs}
        last = len(ordered) - 1
        return {f"p{q:g}": round(ordered[min(last, int(q / 100 * len(ordered)))], 3) for q in qs}

    def summary(self) -> dict[str, float]:
        return self.percentiles(50, 95, 99)
