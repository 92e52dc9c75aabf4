"""The history contract (gateway/history/base.py), run against the embedded log and Redis.

Each history instance plays one replica. Waits are polls with a deadline, never sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.history import Entry, History, MemoryHistory
from gateway.history.memory import MemoryHistoryLog
from gateway.history.redis import RedisHistory
from gateway.testing.redis_server import RedisServer
from tests.backends import MEMORY_AND_REDIS, backend_url
from tests.wait import until


def event(n: int, by: str) -> dict[str, object]:
    return {"type": "event", "npc": by, "name": "tick", "data": {"n": n}}


MakeHistory = Callable[[], Awaitable[tuple[History, list[Entry]]]]


@pytest.fixture(params=MEMORY_AND_REDIS)
async def make_history(request: pytest.FixtureRequest) -> AsyncIterator[MakeHistory]:
    log = MemoryHistoryLog()
    url = backend_url(request)
    made: list[History] = []

    async def make() -> tuple[History, list[Entry]]:
        history: History = RedisHistory(url) if url else MemoryHistory(log)
        seen: list[Entry] = []
        made.append(history)
        await history.start(seen.append)
        return history, seen

    yield make
    for history in made:
        await history.close()


async def test_one_numbering_for_every_replica_in_one_order(make_history: MakeHistory) -> None:
    a, seen_a = await make_history()
    b, seen_b = await make_history()
    for n in range(50):
        (a if n % 3 else b).append(event(n, "a" if n % 3 else "b"), {"dim": "overworld"})
    await until(lambda: len(seen_a) == 50 and len(seen_b) == 50, "50 events on both")
    assert [e.seq for e in seen_a] == list(range(1, 51))
    assert [(e.epoch, e.seq, e.message) for e in seen_a] == [
        (e.epoch, e.seq, e.message) for e in seen_b
    ]
    assert len({e.epoch for e in seen_a}) == 1
    first = seen_a[0]
    assert first.message["epoch"] == first.epoch and first.message["seq"] == 1
    assert first.about == {"dim": "overworld"}
    # One replica's events keep their order within the shared numbering.
    from_a = [e.message["data"]["n"] for e in seen_a if e.message["npc"] == "a"]
    assert from_a == sorted(from_a)


async def test_a_replica_starting_later_loads_the_window(make_history: MakeHistory) -> None:
    a, seen_a = await make_history()
    for n in range(20):
        a.append(event(n, "a"), None)
    await until(lambda: len(seen_a) == 20, "20 events")
    _late, seen_late = await make_history()
    await until(lambda: len(seen_late) == 20, "the late replica's backfill")
    assert [e.seq for e in seen_late] == list(range(1, 21))
    a.append(event(20, "a"), None)
    await until(lambda: len(seen_late) == 21, "a live event after the backfill")
    assert seen_late[-1].seq == 21


@pytest.mark.redis
async def test_redis_restarting_empty_starts_a_new_epoch_and_loses_nothing_queued(
    redis_server: RedisServer, redis_url: str
) -> None:
    history = RedisHistory(redis_url)
    seen: list[Entry] = []
    await history.start(seen.append)
    try:
        history.append(event(0, "a"), None)
        await until(lambda: len(seen) == 1, "the first event")
        old_epoch = seen[0].epoch
        redis_server.stop()
        # Accepted while Redis is down: queued, numbered once it is back.
        history.append(event(1, "a"), None)
        history.append(event(2, "a"), None)
        redis_server.start()
        await until(lambda: len(seen) == 3, "the queued events after the restart")
        assert [e.message["data"]["n"] for e in seen] == [0, 1, 2]
        assert seen[1].epoch != old_epoch and [e.seq for e in seen[1:]] == [1, 2]
        assert history.stats()["dropped"] == 0
    finally:
        await history.close()


@pytest.mark.redis
async def test_redis_queue_is_bounded_and_counts_what_it_drops(
    redis_server: RedisServer, redis_url: str
) -> None:
    history = RedisHistory(redis_url, max_queue=3)
    seen: list[Entry] = []
    await history.start(seen.append)
    try:
        redis_server.stop()
        for n in range(5):
            history.append(event(n, "a"), None)
        assert history.stats()["dropped"] == 2
        redis_server.start()
        await until(lambda: len(seen) == 3, "the three queued events")
        assert [e.message["data"]["n"] for e in seen] == [0, 1, 2]
    finally:
        await history.close()


@pytest.mark.redis
async def test_the_redis_stream_is_capped(redis_server: RedisServer, redis_url: str) -> None:
    history = RedisHistory(redis_url, max_events=100)
    seen: list[Entry] = []
    await history.start(seen.append)
    try:
        for n in range(1000):
            history.append(event(n, "a"), None)
        # A reader may miss what the cap trimmed before it read (the ring then starts over).
        await until(lambda: bool(seen) and seen[-1].seq == 1000, "the 1000th event")
        length = int(redis_server.command("XLEN", "{aicraft:hist}:stream").split(b":")[1])
        assert 100 <= length < 1000  # MAXLEN ~ trims whole nodes: about the cap, never all
    finally:
        await history.close()
