"""The pending-commands contract (gateway/pending/base.py): embedded and on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable

import pytest

from gateway.pending import MemoryPendingCommands, PendingCommands
from gateway.pending.redis import RedisPendingCommands
from tests.backends import MEMORY_AND_REDIS, backend_url

NOW = 1_000_000


@pytest.fixture(params=MEMORY_AND_REDIS)
async def make_pending(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[[], PendingCommands]]:
    url = backend_url(request)
    shared = MemoryPendingCommands()  # replicas in one process share one
    made: list[PendingCommands] = []

    def make() -> PendingCommands:
        pending: PendingCommands = RedisPendingCommands(url) if url else shared
        made.append(pending)
        return pending

    yield make
    for pending in made:
        await pending.close()


def command(n: int) -> dict[str, object]:
    return {"type": "command", "id": f"c{n}", "action": "dig", "args": {"n": n}}


async def push_commands(pending: PendingCommands, ns: Iterable[int], npc: str = "miner") -> None:
    """Queue command(n) for each n, in order, all good for another minute."""
    for n in ns:
        await pending.push(npc, command(n), NOW + 60_000)


async def test_take_returns_what_was_pushed_in_order_once(
    make_pending: Callable[[], PendingCommands],
) -> None:
    a, b = make_pending(), make_pending()
    await push_commands(a, range(3))
    await push_commands(a, [9], npc="other")
    assert await b.take("miner", NOW) == [(NOW + 60_000, command(n)) for n in range(3)]
    assert await a.take("miner", NOW) == []
    assert [m["id"] for _, m in await a.take("other", NOW)] == ["c9"]


async def test_expired_commands_are_never_taken(
    make_pending: Callable[[], PendingCommands],
) -> None:
    pending = make_pending()
    await pending.push("miner", command(0), NOW)  # lapses exactly now
    await pending.push("miner", command(1), NOW + 1)
    assert [m["id"] for _, m in await pending.take("miner", NOW)] == ["c1"]


async def test_two_replicas_taking_at_once_split_the_commands(
    make_pending: Callable[[], PendingCommands],
) -> None:
    a, b = make_pending(), make_pending()
    await push_commands(a, range(50))
    got_a, got_b = await asyncio.gather(a.take("miner", NOW), b.take("miner", NOW))
    ids = [m["id"] for _, m in got_a + got_b]
    assert sorted(ids) == sorted(f"c{n}" for n in range(50))  # each exactly once
