"""Circuit breakers for the gateway's dependencies (§6 `unavailable`, docs/api.md).

CLOSED → OPEN after `failure_threshold` consecutive failures; OPEN rejects at once for
`reset_timeout` seconds; then HALF_OPEN lets one trial call through at a time (a dependency
that is just coming back is not hit by every waiting caller at once) and closes after
`success_threshold` consecutive successes, while any failure there reopens it. A trial whose
outcome is never reported frees its slot after the call timeout, so a lost caller cannot wedge
the breaker half-open.

`BreakerState` is the pure state machine: every method takes `now` (seconds on a monotonic
clock) and nothing here sleeps or does I/O. `CircuitBreaker` adds the clock, the per-call
timeout and the async `call()` wrapper; code that reports its own outcomes (database, Redis)
uses `allow()` / `record_success()` / `record_failure()` instead of `call()`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# Names the gateway registers (docs/api.md `circuitBreakers`).
MINECRAFT_BRIDGE_BREAKER = "MinecraftBridge"
DATABASE_BREAKER = "database"
REDIS_BREAKER = "redis"
BREAKER_NAMES = (MINECRAFT_BRIDGE_BREAKER, DATABASE_BREAKER, REDIS_BREAKER)

MAX_TRANSITIONS = 10


class BreakerStatus(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class CircuitOpen(Exception):
    """The breaker is open: the call was rejected without touching the dependency."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit breaker {name!r} is open; retry in {retry_after:.1f} s")
        self.name = name
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int = 5
    success_threshold: int = 2
    reset_timeout: float = 60.0  # seconds OPEN before trial calls are let through
    timeout: float | None = 5.0  # per call() in seconds; None disables it
    window: int = 100  # successRate is computed over the last `window` completed calls

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.success_threshold < 1:
            raise ValueError("failure_threshold and success_threshold must be >= 1")
        if self.reset_timeout < 0:
            raise ValueError("reset_timeout must be >= 0")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be > 0 or None")
        if self.window < 1:
            raise ValueError("window must be >= 1")


@dataclass(frozen=True, slots=True)
class Transition:
    from_state: BreakerStatus
    to_state: BreakerStatus
    at: float  # the same clock as `now`
    reason: str


class BreakerState:
    """The pure state machine. Not thread-safe; the gateway uses it from one event loop."""

    def __init__(self, config: BreakerConfig, now: float) -> None:
        self.config = config
        self._state = BreakerStatus.CLOSED
        self.changed_at = now
        self.opened_at: float | None = None
        self.failure_count = 0  # consecutive failures since the last success
        self.half_open_successes = 0
        self.trial_until: float | None = None  # HALF_OPEN: a trial is out until this time
        self.total_calls = 0
        self.successes = 0
        self.failures = 0
        self.rejected = 0
        self._recent: deque[bool] = deque(maxlen=config.window)
        self.transitions: deque[Transition] = deque(maxlen=MAX_TRANSITIONS)

    def state(self, now: float) -> BreakerStatus:
        """The state at `now`; OPEN turns HALF_OPEN lazily once the reset timeout has passed."""
        if (
            self._state is BreakerStatus.OPEN
            and self.opened_at is not None
            and now - self.opened_at >= self.config.reset_timeout
        ):
            self._move(BreakerStatus.HALF_OPEN, now, "reset timeout elapsed")
        return self._state

    def allow(self, now: float) -> bool:
        """May a call go through now? A refusal is counted in `rejected`. In HALF_OPEN the
        caller that gets True holds the one trial slot until it reports an outcome (or
        `release`s it)."""
        state = self.state(now)
        if state is BreakerStatus.HALF_OPEN:
            if self.trial_until is not None and now < self.trial_until:
                self.rejected += 1
                return False
            self.trial_until = now + self._trial_lease()
            return True
        if state is BreakerStatus.OPEN:
            self.rejected += 1
            return False
        return True

    def release(self, now: float) -> None:
        """The call holding the trial slot ended without an outcome (it was cancelled)."""
        self.trial_until = None

    def retry_after(self, now: float) -> float:
        """Seconds until a call may be let through: the rest of the open period, or of the
        trial in flight while HALF_OPEN (0 when a call would go through now)."""
        state = self.state(now)
        if state is BreakerStatus.HALF_OPEN and self.trial_until is not None:
            return max(0.0, self.trial_until - now)
        if state is not BreakerStatus.OPEN or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.config.reset_timeout - now)

    def _trial_lease(self) -> float:
        # The per-call timeout bounds a trial; without one, the open period does.
        if self.config.timeout is not None:
            return self.config.timeout
        return max(self.config.reset_timeout, 1.0)

    def record_success(self, now: float) -> None:
        state = self.state(now)
        self.trial_until = None
        self._count(True)
        self.failure_count = 0
        if state is BreakerStatus.HALF_OPEN:
            self.half_open_successes += 1
            if self.half_open_successes >= self.config.success_threshold:
                self._move(BreakerStatus.CLOSED, now, f"{self.half_open_successes} trial successes")
        # A success reported while OPEN comes from a call started before it opened: it is
        # counted but does not shorten the open period.

    def record_failure(self, now: float) -> None:
        state = self.state(now)
        self.trial_until = None
        self._count(False)
        self.failure_count += 1
        if state is BreakerStatus.CLOSED and self.failure_count >= self.config.failure_threshold:
            self._move(BreakerStatus.OPEN, now, f"{self.failure_count} consecutive failures")
        elif state is BreakerStatus.HALF_OPEN:
            self._move(BreakerStatus.OPEN, now, "trial call failed")
        # A late failure while already OPEN does not extend the open period.

    def success_rate(self) -> float:
        """Successes / completed calls over the last `window` calls; 1.0 before any call."""
        if not self._recent:
            return 1.0
        return sum(self._recent) / len(self._recent)

    def _count(self, ok: bool) -> None:
        self.total_calls += 1
        if ok:
            self.successes += 1
        else:
            self.failures += 1
        self._recent.append(ok)

    def _move(self, to: BreakerStatus, now: float, reason: str) -> None:
        self.transitions.append(Transition(self._state, to, now, reason))
        self._state = to
        self.changed_at = now
        self.half_open_successes = 0
        self.trial_until = None
        self.opened_at = now if to is BreakerStatus.OPEN else None


class CircuitBreaker:
    """One named breaker: the state machine plus a clock, a per-call timeout and `call()`."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        # Timing runs on the monotonic clock; stats report epoch ms via this fixed offset.
        self._epoch_offset = wall_clock() - clock()
        self._core = BreakerState(self.config, clock())

    @property
    def state(self) -> BreakerStatus:
        return self._core.state(self._clock())

    def allow(self) -> bool:
        return self._core.allow(self._clock())

    def retry_after(self) -> float:
        return self._core.retry_after(self._clock())

    def record_success(self) -> None:
        self._core.record_success(self._clock())

    def record_failure(self) -> None:
        self._core.record_failure(self._clock())

    def release(self) -> None:
        self._core.release(self._clock())

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` through the breaker.

        Raises CircuitOpen at once while OPEN (or HALF_OPEN with its trial out), TimeoutError
        after `config.timeout` (counted as a failure), or whatever `fn` raised (counted as a
        failure). Cancellation from outside is neither a success nor a failure.
        """
        if not self.allow():
            raise CircuitOpen(self.name, self.retry_after())
        try:
            async with asyncio.timeout(self.config.timeout):
                result = await fn(*args, **kwargs)
        except Exception:
            self.record_failure()
            raise
        except BaseException:
            self.release()
            raise
        self.record_success()
        return result

    def stats(self) -> dict[str, Any]:
        core = self._core
        state = core.state(self._clock())
        return {
            "state": state.value,
            "failureCount": core.failure_count,
            "successRate": round(core.success_rate(), 4),
            "successRateWindow": self.config.window,
            "totalCalls": core.total_calls,
            "successes": core.successes,
            "failures": core.failures,
            "rejected": core.rejected,
            "lastStateChange": self._epoch_ms(core.changed_at),
            "transitions": [
                {
                    "from": t.from_state.value,
                    "to": t.to_state.value,
                    "at": self._epoch_ms(t.at),
                    "reason": t.reason,
                }
                for t in core.transitions
            ],
        }

    def _epoch_ms(self, t: float) -> int:
        return round((t + self._epoch_offset) * 1000)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name} {self.state.value}>"


class BreakerRegistry:
    """Name → breaker, created on first use, for /api/performance `circuitBreakers`."""

    def __init__(
        self,
        names: Iterable[str] = (),
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config or BreakerConfig()
        self._clock = clock
        self._wall_clock = wall_clock
        self._breakers: dict[str, CircuitBreaker] = {}
        for name in names:
            self.get(name)

    def get(self, name: str, config: BreakerConfig | None = None) -> CircuitBreaker:
        """The breaker called `name`; `config` applies only when this call creates it."""
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(
                name, config or self._config, clock=self._clock, wall_clock=self._wall_clock
            )
            self._breakers[name] = breaker
        return breaker

    def __getitem__(self, name: str) -> CircuitBreaker:
        return self._breakers[name]

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: b.stats() for name, b in sorted(self._breakers.items())}
