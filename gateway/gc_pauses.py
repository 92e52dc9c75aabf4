"""How long the cyclic garbage collector stops the process, per generation (`gc.callbacks`).

A collection runs inside whatever allocation triggered it, so on the event loop's thread it
delays everything: a tick, a viewer's frame. The figures go to `/api/performance`
`process.gc.pauses` and `/metrics`. Process-wide (the collector is), installed once.
"""

from __future__ import annotations

import gc
import time
from typing import Any

SLOW_MS = 5.0  # a pause this long shows up as tick lateness: counted on its own


class GcPauses:
    """Collections and their pauses, by generation, since `install`."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.total_s = [0.0, 0.0, 0.0]
        self.max_s = [0.0, 0.0, 0.0]
        self.slow = 0  # pauses of SLOW_MS or more, any generation
        self._started = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = info["generation"]
        self.count[generation] += 1
        self.total_s[generation] += pause
        if pause > self.max_s[generation]:
            self.max_s[generation] = pause
        if pause * 1000 >= SLOW_MS:
            self.slow += 1

    def stats(self) -> dict[str, Any]:
        """Per generation (`gen0`..`gen2`): collections, their total and longest pause (ms);
        `slow`: pauses of SLOW_MS or more, any generation."""
        figures: dict[str, Any] = {
            f"gen{g}": {
                "collections": self.count[g],
                "totalMs": round(self.total_s[g] * 1000, 2),
                "maxMs": round(self.max_s[g] * 1000, 2),
            }
            for g in range(3)
        }
        figures["slow"] = self.slow
        figures["slowMs"] = SLOW_MS
        return figures


_PAUSES: GcPauses | None = None


def install() -> GcPauses:
    """The process's pause recorder, registered with the collector on first use."""
    global _PAUSES
    if _PAUSES is None:
        _PAUSES = GcPauses()
        gc.callbacks.append(_PAUSES.on_gc)
    return _PAUSES
