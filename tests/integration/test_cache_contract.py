"""The cache contract (gateway/cache/base.py), run against every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.cache.base import Cache
from gateway.cache.memory import MemoryCache
from gateway.cache.redis import DATA_PREFIX, RedisCache
from tests.backends import MEMORY_AND_REDIS, backend_for

DEADLINE_S = 10.0


@pytest.fixture(params=MEMORY_AND_REDIS)
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    async with backend_for(request, MemoryCache, RedisCache) as backend:
        yield backend


async def test_get_set(cache: Cache) -> None:
    assert await cache.get("k") is None
    await cache.set("k", b"v1", ttl_s=60)
    assert await cache.get("k") == b"v1"
    await cache.set("k", b"\x00v2", ttl_s=60)
    assert await cache.get("k") == b"\x00v2"


async def test_ttl_expiry(cache: Cache) -> None:
    await cache.set("short", b"v", ttl_s=0.05)
    await cache.set("long", b"v", ttl_s=60)
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while await cache.get("short") is not None:
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("the short-lived entry never expired")
        await asyncio.sleep(0.01)
    assert await cache.get("long") == b"v"


async def test_delete(cache: Cache) -> None:
    for key in ("a", "b", "c"):
        await cache.set(key, key.encode(), ttl_s=60)
    await cache.delete("a", "b", "missing")
    await cache.delete()
    assert await cache.get("a") is None
    assert await cache.get("b") is None
    assert await cache.get("c") == b"c"


async def test_incr_and_version(cache: Cache) -> None:
    assert await cache.version("npcs") == 0
    assert await cache.incr("npcs") == 1
    assert await cache.incr("npcs") == 2
    assert await cache.version("npcs") == 2
    assert await cache.version("other") == 0


async def test_versions_are_not_data(cache: Cache) -> None:
    await cache.incr("k")
    await cache.set("k", b"data", ttl_s=60)
    assert await cache.get("k") == b"data"
    assert await cache.version("k") == 1
    await cache.delete("k")
    assert await cache.version("k") == 1


async def test_counters(cache: Cache) -> None:
    await cache.set("k", b"v", ttl_s=60)
    await cache.get("k")
    await cache.get("k")
    await cache.get("k")
    await cache.get("missing")
    stats = cache.stats()
    assert stats["backend"] == cache.backend
    assert (stats["totalHits"], stats["totalMisses"]) == (3, 1)
    assert stats["hitRate"] == 0.75


async def test_empty_stats(cache: Cache) -> None:
    stats = cache.stats()
    assert (stats["totalHits"], stats["totalMisses"], stats["hitRate"]) == (0, 0, 0.0)


@pytest.mark.redis
async def test_redis_keys_are_namespaced(redis_url: str) -> None:
    cache = RedisCache(redis_url)
    client = Redis.from_url(redis_url)
    try:
        await cache.set("npc:1", b"v", ttl_s=60)
        assert await client.get(DATA_PREFIX + "npc:1") == b"v"
        assert 0 < await client.pttl(DATA_PREFIX + "npc:1") <= 60_000
    finally:
        await client.aclose()
        await cache.close()
