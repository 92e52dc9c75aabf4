"""The breaker's state machine, driven by a hand-moved clock (no sleeps, no I/O)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.breaker import (
    BREAKER_NAMES,
    BreakerConfig,
    BreakerRegistry,
    BreakerState,
    BreakerStatus,
    CircuitBreaker,
    CircuitOpen,
)

CLOSED, OPEN, HALF_OPEN = BreakerStatus.CLOSED, BreakerStatus.OPEN, BreakerStatus.HALF_OPEN
EPOCH = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(config: BreakerConfig | None = None) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    breaker = CircuitBreaker("dep", config, clock=clock, wall_clock=lambda: EPOCH + clock.now)
    return breaker, clock


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.config.failure_threshold):
        breaker.record_failure()


def half_open(config: BreakerConfig | None = None) -> tuple[CircuitBreaker, FakeClock]:
    """A breaker tripped by the default failures whose 60 s open period has just run out."""
    breaker, clock = make(config)
    trip(breaker)
    clock.advance(60)
    return breaker, clock


async def hanging_call(breaker: CircuitBreaker) -> asyncio.Task[None]:
    """A call through `breaker` that never returns, once it is under way."""
    started = asyncio.Event()

    async def wait_forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(breaker.call(wait_forever))
    await started.wait()
    return task


async def cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- the pure core ---------------------------------------------------------------------------


def test_core_defaults_match_the_issue() -> None:
    config = BreakerConfig()
    assert (config.failure_threshold, config.success_threshold) == (5, 2)
    assert (config.reset_timeout, config.timeout) == (60.0, 5.0)


def test_core_opens_after_five_consecutive_failures() -> None:
    core = BreakerState(BreakerConfig(), now=0.0)
    for i in range(4):
        core.record_failure(now=float(i))
        assert core.state(now=float(i)) is CLOSED
    core.record_failure(now=4.0)
    assert core.state(now=4.0) is OPEN
    assert core.opened_at == 4.0


def test_core_success_resets_the_consecutive_count() -> None:
    core = BreakerState(BreakerConfig(), now=0.0)
    for _ in range(4):
        core.record_failure(now=0.0)
    core.record_success(now=0.0)
    assert core.failure_count == 0
    for _ in range(4):
        core.record_failure(now=0.0)
    assert core.state(now=0.0) is CLOSED


def test_core_open_turns_half_open_exactly_at_reset_timeout() -> None:
    core = BreakerState(BreakerConfig(reset_timeout=60.0), now=0.0)
    for _ in range(5):
        core.record_failure(now=10.0)
    assert not core.allow(now=69.999)
    assert core.retry_after(now=69.0) == pytest.approx(1.0)
    assert core.allow(now=70.0)
    assert core.state(now=70.0) is HALF_OPEN


@pytest.mark.parametrize("bad", [{"failure_threshold": 0}, {"reset_timeout": -1}, {"timeout": 0}])
def test_config_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**bad)  # type: ignore[arg-type]


# --- transitions through the public breaker --------------------------------------------------


def test_five_failures_open_and_open_rejects() -> None:
    breaker, _ = make()
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state is CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is OPEN
    assert not breaker.allow()
    assert not breaker.allow()
    assert breaker.stats()["rejected"] == 2


async def test_open_call_raises_circuit_open_without_calling() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(15)
    called = False

    async def dependency() -> str:
        nonlocal called
        called = True
        return "x"

    with pytest.raises(CircuitOpen) as info:
        await breaker.call(dependency)
    assert not called
    assert info.value.name == "dep"
    assert info.value.retry_after == pytest.approx(45.0)


def test_reset_timeout_then_half_open_then_two_successes_close() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(59.9)
    assert breaker.state is OPEN
    clock.advance(0.1)
    assert breaker.state is HALF_OPEN
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is HALF_OPEN
    breaker.record_success()
    assert breaker.state is CLOSED
    assert breaker.stats()["failureCount"] == 0


def test_failure_in_half_open_reopens_for_a_full_reset_timeout() -> None:
    breaker, clock = half_open()
    breaker.record_success()  # one trial success is not enough...
    breaker.record_failure()  # ...and a failure reopens at once
    assert breaker.state is OPEN
    clock.advance(59)
    assert breaker.state is OPEN
    clock.advance(1)
    assert breaker.state is HALF_OPEN
    # The earlier trial success does not carry over: two fresh ones are needed.
    breaker.record_success()
    assert breaker.state is HALF_OPEN
    breaker.record_success()
    assert breaker.state is CLOSED


def test_late_outcomes_while_open_do_not_move_the_open_period() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(30)
    breaker.record_failure()
    breaker.record_success()
    assert breaker.state is OPEN
    clock.advance(30)
    assert breaker.state is HALF_OPEN


async def test_call_counts_success_and_failure() -> None:
    breaker, _ = make()

    async def ok(value: int) -> int:
        return value * 2

    async def boom() -> None:
        raise ConnectionRefusedError("down")

    assert await breaker.call(ok, 21) == 42
    with pytest.raises(ConnectionRefusedError):
        await breaker.call(boom)
    stats = breaker.stats()
    assert stats["totalCalls"] == 2
    assert stats["failureCount"] == 1
    assert stats["successRate"] == 0.5


async def test_timeout_counts_as_a_failure_and_raises_timeout_error() -> None:
    breaker, _ = make(BreakerConfig(timeout=0.01))
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()

    for _ in range(5):
        with pytest.raises(TimeoutError):
            await breaker.call(hang)
    assert breaker.state is OPEN
    assert breaker.stats()["failures"] == 5


async def test_cancellation_is_neither_success_nor_failure() -> None:
    breaker, _ = make()
    await cancel(await hanging_call(breaker))
    assert breaker.stats()["totalCalls"] == 0


async def test_half_open_call_failure_reopens_and_raises_the_original_error() -> None:
    breaker, _ = half_open()

    async def boom() -> None:
        raise OSError("still down")

    with pytest.raises(OSError, match="still down"):
        await breaker.call(boom)
    assert breaker.state is OPEN


def test_stats_shape_counters_and_transitions() -> None:
    breaker, clock = make()
    stats = breaker.stats()
    assert stats["state"] == "CLOSED"
    assert stats["successRate"] == 1.0  # no calls yet
    assert stats["lastStateChange"] == round((EPOCH + 1000.0) * 1000)

    breaker.record_success()
    clock.advance(1)
    trip(breaker)
    breaker.allow()
    clock.advance(60)
    breaker.record_success()
    breaker.record_success()

    stats = breaker.stats()
    assert stats["state"] == "CLOSED"
    assert stats["totalCalls"] == 8
    assert (stats["successes"], stats["failures"], stats["rejected"]) == (3, 5, 1)
    assert stats["successRate"] == 0.375
    assert stats["lastStateChange"] == round((EPOCH + 1061.0) * 1000)
    assert [(t["from"], t["to"]) for t in stats["transitions"]] == [
        ("CLOSED", "OPEN"),
        ("OPEN", "HALF_OPEN"),
        ("HALF_OPEN", "CLOSED"),
    ]
    assert stats["transitions"][0]["at"] == round((EPOCH + 1001.0) * 1000)
    assert stats["transitions"][0]["reason"] == "5 consecutive failures"


def test_success_rate_is_over_the_recent_window() -> None:
    breaker, _ = make(BreakerConfig(window=4, failure_threshold=100))
    for _ in range(10):
        breaker.record_failure()
    for _ in range(3):
        breaker.record_success()
    assert breaker.stats()["successRate"] == 0.75
    assert breaker.stats()["totalCalls"] == 13


def test_registry_names_stats_and_reuse() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(BREAKER_NAMES, clock=clock, wall_clock=lambda: EPOCH)
    assert set(registry.stats()) == {"MinecraftBridge", "database", "redis"}
    db = registry.get("database")
    assert registry.get("database") is db
    assert registry["database"] is db and "redis" in registry and len(registry) == 3
    trip(db)
    stats = registry.stats()
    assert stats["database"]["state"] == "OPEN"
    assert stats["redis"]["state"] == "CLOSED"
    custom = registry.get("other", BreakerConfig(failure_threshold=1))
    custom.record_failure()
    assert custom.state is OPEN


def test_half_open_lets_one_trial_through_at_a_time() -> None:
    breaker, _ = half_open()
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # a second caller while the trial is out
    assert breaker.stats()["rejected"] == 1
    breaker.record_success()
    assert breaker.state is HALF_OPEN
    assert breaker.allow()  # the next trial, now that the first came back
    breaker.record_success()
    assert breaker.state is CLOSED
    assert breaker.allow() and breaker.allow()  # CLOSED: no limit


def test_a_lost_trial_frees_its_slot_after_the_call_timeout() -> None:
    breaker, clock = half_open(BreakerConfig(timeout=5.0))
    assert breaker.allow()
    assert not breaker.allow()
    clock.advance(5.0)  # whoever took the trial never reported back
    assert breaker.allow()


async def test_cancelled_trial_frees_the_slot() -> None:
    breaker, _ = half_open()
    trial = await hanging_call(breaker)
    assert not breaker.allow()
    await cancel(trial)
    assert breaker.allow()
