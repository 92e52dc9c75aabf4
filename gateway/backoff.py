"""Waiting between attempts to reach a server that is down: exponential backoff with jitter.

Every Redis adapter keeps its own connection up by itself (a replica starts and runs while
Redis is away); they all wait the same way between attempts, so a dead server is not
hammered and replicas that lost it together do not come back in lockstep.
"""

from __future__ import annotations

import asyncio
import random

BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 1.5


def backoff_delay(
    attempt: int, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S
) -> float:
    """Exponential backoff with "equal jitter": never zero, never above `cap_s`."""
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, 16))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Backoff:
    """The failed attempts in a row of one reconnecting loop, and the wait after each."""

    def __init__(self) -> None:
        self.attempt = 0

    @property
    def first(self) -> bool:
        """No failure since the last success: the failure worth a warning (not every retry)."""
        return self.attempt == 0

    async def wait(self) -> None:
        """Sleep before the next attempt, longer after each failure in a row."""
        await asyncio.sleep(backoff_delay(self.attempt))
        self.attempt += 1

    def succeeded(self) -> bool:
        """Start counting afresh; whether this success ended a run of failures (a reconnect)."""
        recovered = self.attempt > 0
        self.attempt = 0
        return recovered
