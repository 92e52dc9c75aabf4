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


class FloodGuard:
    """What to do with each incoming message of one connection: flood control's policy.

    `check` answers "ok", "reject" (drop it and tell the sender: at most once per
    `error_every_s`), "drop" (drop it silently) or "close" (the flood lasted `close_after_s`).
    """

    __slots__ = ("_bucket", "_close_after_s", "_error_every_s", "_last_error")

    def __init__(
        self,
        rate: float,
        burst: int,
        now: float,
        close_after_s: float = 10.0,
        error_every_s: float = 1.0,
    ) -> None:
        self._bucket = TokenBucket(rate, burst, now)
        self._close_after_s = close_after_s
        self._error_every_s = error_every_s
        self._last_error = -1e18

    def check(self, now: float) -> str:
        if self._bucket.take(now):
            return "ok"
        if self._bucket.flooding_for(now) >= self._close_after_s:
            return "close"
        if now - self._last_error >= self._error_every_s:
            self._last_error = now
            return "reject"
        return "drop"
