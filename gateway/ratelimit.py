"""Flood control for one bot connection: a token bucket, and how long a flood has lasted."""

from __future__ import annotations

FLOOD_GAP_S = 1.0  # a pause this long without rejections ends a flood


class TokenBucket:
    """`rate` tokens per second up to `burst`; pure: the caller passes the time."""

    __slots__ = ("_last", "_tokens", "burst", "flood_started", "last_rejected", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = now
        self.flood_started: float | None = None
        self.last_rejected = -1e18

    def take(self, now: float) -> bool:
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        if now - self.last_rejected > FLOOD_GAP_S:
            self.flood_started = now
        self.last_rejected = now
        return False

    def flooding_for(self, now: float) -> float:
        """How long the current flood has lasted (0 when not flooding)."""
        if self.flood_started is None or now - self.last_rejected > FLOOD_GAP_S:
            return 0.0
        return now - self.flood_started
