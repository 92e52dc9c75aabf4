"""The per-replica tick: on a fixed schedule, call the window handler and measure lateness."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.stats import RollingPercentiles

log = logging.getLogger(__name__)


class Ticker:
    """Calls `on_tick` every `period_s` on an absolute schedule (no drift).

    Lateness is how far after its scheduled time a tick started; a tick that overran its
    period makes the next one start at once rather than piling up.
    """

    def __init__(self, period_s: float, on_tick: Callable[[], None]) -> None:
        self.period_s = period_s
        self._on_tick = on_tick
        self.lateness_ms = RollingPercentiles()
        self.duration_ms = RollingPercentiles()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ticker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.period_s
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            started = loop.time()
            self.lateness_ms.add((started - due) * 1000)
            t0 = time.perf_counter()
            try:
                self._on_tick()
            except Exception:
                log.exception("tick failed")
            self.duration_ms.add((time.perf_counter() - t0) * 1000)
            due += self.period_s
            if due < loop.time():  # overran: skip missed slots instead of bursting
                due = loop.time()

    def stats(self) -> dict[str, object]:
        return {
            "periodMs": self.period_s * 1000,
            "count": self.lateness_ms.count,
            "latenessMs": self.lateness_ms.summary(),
            "durationMs": self.duration_ms.summary(),
        }
