"""The presence contract (gateway/presence/base.py), run against every backend; then what only
a backend with a TTL can show (expiry, re-creation after a Redis restart)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.presence.base import Presence
from gateway.presence.memory import MemoryPresence
from gateway.presence.redis import INDEX_KEY, KEY_PREFIX, RedisPresence
from tests.backends import MEMORY_AND_REDIS, backend_for
from tests.wait import until


@pytest.fixture(params=MEMORY_AND_REDIS)
async def presence(request: pytest.FixtureRequest) -> AsyncIterator[Presence]:
    async with backend_for(request, MemoryPresence, RedisPresence) as backend:
        yield backend


async def test_claim_returns_previous_other_holder(presence: Presence) -> None:
    assert await presence.claim("npc1", "A") is None
    assert await presence.claim("npc1", "A") is None  # re-claiming your own bot: no one else
    assert await presence.claim("npc1", "B") == "A"
    assert await presence.holder("npc1") == "B"
    assert await presence.claim("npc1", "A") == "B"


async def test_holder_of_unknown_is_none(presence: Presence) -> None:
    assert await presence.holder("nobody") is None


async def test_release_only_by_holder(presence: Presence) -> None:
    await presence.claim("npc1", "A")
    await presence.claim("npc1", "B")
    await presence.release("npc1", "A")  # A lost it already: must not remove B's claim
    assert await presence.holder("npc1") == "B"
    await presence.release("npc1", "B")
    assert await presence.holder("npc1") is None
    await presence.release("npc1", "B")  # releasing twice is harmless
    assert await presence.online() == set()


async def test_online(presence: Presence) -> None:
    await presence.claim("n1", "A")
    await presence.claim("n2", "B")
    await presence.claim("n3", "A")
    await presence.release("n3", "A")
    assert await presence.online() == {"n1", "n2"}
    assert await presence.online(["n1", "n3", "n9"]) == {"n1"}
    assert await presence.online([]) == set()


async def test_online_many(presence: Presence) -> None:
    ids = [f"npc-{i}" for i in range(2500)]  # more than one MGET chunk
    for npc_id in ids:
        await presence.claim(npc_id, "A")
    assert await presence.online([*ids, "ghost"]) == set(ids)
    assert await presence.online() == set(ids)


async def test_refresh_keeps_own_claims_and_never_steals(presence: Presence) -> None:
    await presence.claim("n1", "A")
    await presence.claim("n2", "A")
    await presence.claim("n2", "B")  # the bot moved to B
    await presence.refresh("A", ["n1", "n2"])
    assert await presence.holder("n1") == "A"
    assert await presence.holder("n2") == "B"
    await presence.refresh("A", [])


# -- Redis only: the TTL -----------------------------------------------------------------


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


MakePresence = Callable[..., RedisPresence]


@pytest.fixture
async def make_presence(redis_url: str) -> AsyncIterator[MakePresence]:
    """RedisPresence instances on the session's Redis, closed after the test."""
    made: list[RedisPresence] = []

    def make(**kw: Any) -> RedisPresence:
        made.append(RedisPresence(redis_url, **kw))
        return made[-1]

    yield make
    for presence in made:
        await presence.close()


@pytest.mark.redis
async def test_claim_expires_without_refresh(make_presence: MakePresence) -> None:
    presence = make_presence(ttl_s=0.2)
    await presence.claim("n1", "A")
    await presence.claim("n2", "A")  # a moment later: it expires a moment later too

    async def both_gone() -> bool:
        return await presence.holder("n1") is None and await presence.holder("n2") is None

    # Waiting for n1 alone and then asserting n2 gone raced n2's own, later deadline.
    await until(both_gone, "the unrefreshed claims to expire")
    assert await presence.online(["n1", "n2"]) == set()
    assert await presence.online() == set()


@pytest.mark.redis
async def test_online_all_prunes_expired_ids(make_presence: MakePresence, redis: Redis) -> None:
    presence = make_presence()
    await presence.claim("n1", "A")
    await presence.claim("n2", "A")
    await redis.delete(KEY_PREFIX + "n1")  # as if its TTL ran out
    assert await presence.online() == {"n2"}
    assert await redis.smembers(INDEX_KEY) == {b"n2"}


@pytest.mark.redis
async def test_refresh_resets_the_ttl(make_presence: MakePresence, redis: Redis) -> None:
    presence = make_presence(ttl_s=30.0)
    await presence.claim("n1", "A")
    await redis.pexpire(KEY_PREFIX + "n1", 50)  # nearly expired
    await presence.refresh("A", ["n1"])
    assert await redis.pttl(KEY_PREFIX + "n1") > 1_000  # back to a full TTL


@pytest.mark.redis
async def test_refresh_recreates_claims_after_flushall(
    make_presence: MakePresence, redis: Redis
) -> None:
    presence = make_presence()
    await presence.claim("n1", "A")
    await presence.claim("n2", "A")
    await presence.claim("n3", "B")
    await redis.flushall()  # what a Redis restart without persistence looks like
    assert await presence.online() == set()

    await presence.refresh("A", ["n1", "n2"])
    assert await presence.online() == {"n1", "n2"}
    assert await presence.holder("n1") == "A"
    assert await redis.pttl(KEY_PREFIX + "n1") > 0


@pytest.mark.redis
async def test_refresh_held_reports_lost_ids(make_presence: MakePresence) -> None:
    presence = make_presence()
    await presence.claim("n1", "A")
    await presence.claim("n2", "B")
    assert await presence.refresh_held("A", ["n1", "n2", "n3"]) == {"n2"}
    assert await presence.holder("n3") == "A"  # absent: re-created for A
