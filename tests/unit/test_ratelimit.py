"""Flood control: the token bucket and how long a flood lasts."""

from __future__ import annotations

from gateway.ratelimit import TokenBucket


def test_burst_then_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert all(bucket.take(0.0) for _ in range(5))
    assert not bucket.take(0.0)
    assert bucket.take(0.1)  # one token back after 1/rate seconds
    assert not bucket.take(0.1)


def test_a_flood_is_measured_until_it_pauses() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=0.0)
    bucket.take(0.0)
    t = 0.0
    while t < 12:
        bucket.take(t)
        t += 0.01
    assert bucket.flooding_for(t) > 10
    assert bucket.flooding_for(t + 2) == 0.0  # a second of quiet ends it


def test_flood_guard_policy() -> None:
    from gateway.ratelimit import FloodGuard

    guard = FloodGuard(rate=1, burst=2, now=0.0, close_after_s=3.0)
    assert [guard.check(0.0) for _ in range(4)] == ["ok", "ok", "reject", "drop"]
    verdicts = [guard.check(0.5 + i * 0.01) for i in range(400)]
    assert "reject" in verdicts and verdicts[-1] == "close"
