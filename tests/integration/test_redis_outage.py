"""Redis goes away mid-stream and comes back on the same port.

Each test owns its Redis server (stopping the shared one would disturb other tests). Waits
are polls with generous deadlines; the `asyncio.timeout` guards turn a hang into a failure
and measure nothing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator

import pytest
from redis.asyncio import Redis

from gateway.bus.base import EVENTS
from gateway.bus.messages import Status, encode
from gateway.bus.redis import RedisBus
from gateway.cache.redis import RedisCache
from gateway.presence.redis import PresenceUnavailable, RedisPresence
from gateway.regions import region_channel
from gateway.testing.redis_server import RedisServer
from tests import wait

POSITIONS = region_channel("overworld", 0, 0)

pytestmark = pytest.mark.redis

DEADLINE_S = 15.0  # above the bus's reconnect backoff cap, with room for a loaded machine
until = functools.partial(wait.until, deadline_s=DEADLINE_S)
GUARD_S = 5.0


class Recorder:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def __call__(self, channel: str, payload: bytes) -> None:
        self.payloads.append(payload)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


# -- bus --------------------------------------------------------------------------------


async def test_bus_drops_while_down_and_recovers_by_itself(server: RedisServer) -> None:
    a, b = RedisBus(server.url), RedisBus(server.url)
    a.set_positions(None)
    b.set_positions(None)
    got_a, got_b = Recorder(), Recorder()
    await a.start("A", got_a)
    await b.start("B", got_b)
    try:
        a.publish(POSITIONS, b"before")
        await until(lambda: got_b.payloads == [b"before"], "the first message")

        server.stop()
        sent_while_down = 0

        def publishing_until_dropped() -> bool:
            nonlocal sent_while_down
            a.publish(POSITIONS, b"down")  # synchronous: nothing to await
            sent_while_down += 1
            return a.stats()["dropped"] > 0 and not a.stats()["connected"]

        await until(publishing_until_dropped, "publishes to be dropped")
        await until(lambda: not b.stats()["connected"], "B to notice the outage")
        assert a.stats()["queued"] == 0  # dropped, not piling up
        assert a.stats()["dropped"] <= sent_while_down

        server.start()
        n = 0

        def flowing(bus: RedisBus, sender: str, peer: Recorder) -> Callable[[], bool]:
            def check() -> bool:
                nonlocal n
                n += 1
                bus.publish(EVENTS, encode(sender, Status(npc="n1", status=f"after-{n}")))
                return any(sender.encode() in p for p in peer.payloads)

            return check

        await until(flowing(a, "A", got_b), "A -> B after the restart")
        await until(flowing(b, "B", got_a), "B -> A after the restart")
        await until(lambda: a.stats()["connected"] and b.stats()["connected"], "connected")
        assert not any(b"A" in p for p in got_a.payloads)  # still no echoes
        assert a.stats()["reconnects"] >= 1
    finally:
        await a.close()
        await b.close()


async def test_bus_starts_while_redis_is_down(server: RedisServer) -> None:
    server.stop()
    a, b = RedisBus(server.url), RedisBus(server.url)
    got_b = Recorder()
    async with asyncio.timeout(GUARD_S):
        await a.start("A", Recorder())
        await b.start("B", got_b)
    try:
        a.publish(EVENTS, b"lost")
        assert a.stats()["dropped"] == 1
        assert a.stats()["connected"] is False

        server.start()
        n = 0

        def flowing() -> bool:
            nonlocal n
            n += 1
            a.publish(EVENTS, b"hello-%d" % n)
            return bool(got_b.payloads)

        await until(flowing, "the bus to connect once Redis is up")
        assert b"lost" not in got_b.payloads
    finally:
        await a.close()
        await b.close()


async def test_bus_queue_is_bounded(server: RedisServer) -> None:
    a, b = RedisBus(server.url, max_queue=10), RedisBus(server.url)
    got_b = Recorder()
    await a.start("A", Recorder())
    await b.start("B", got_b)
    try:
        # No await in between: the sender cannot drain, so the queue fills and overflows.
        for i in range(100):
            a.publish(EVENTS, b"%d" % i)
        assert (a.stats()["queued"], a.stats()["dropped"]) == (10, 90)
        await until(lambda: len(got_b.payloads) == 10, "the queued ten")
        assert got_b.payloads == [b"%d" % i for i in range(10)]
    finally:
        await a.close()
        await b.close()


# -- presence ---------------------------------------------------------------------------


async def test_presence_unavailable_then_refresh_recreates(server: RedisServer) -> None:
    presence = RedisPresence(server.url)
    try:
        await presence.claim("n1", "A")
        await presence.claim("n2", "A")
        server.stop()

        async with asyncio.timeout(GUARD_S):
            with pytest.raises(PresenceUnavailable):
                await presence.claim("n3", "A")
            with pytest.raises(PresenceUnavailable):
                await presence.holder("n1")
            with pytest.raises(PresenceUnavailable):
                await presence.online(["n1"])
            with pytest.raises(PresenceUnavailable):
                await presence.online()
            with pytest.raises(PresenceUnavailable):
                await presence.release("n1", "A")
            with pytest.raises(PresenceUnavailable):
                await presence.refresh("A", ["n1", "n2"])

        server.start()  # no persistence: every claim is gone
        assert await presence.online() == set()
        await presence.refresh("A", ["n1", "n2"])  # the heartbeat re-registers
        assert await presence.online() == {"n1", "n2"}
        assert await presence.holder("n1") == "A"
    finally:
        await presence.close()


# -- cache ------------------------------------------------------------------------------


async def test_cache_misses_while_down_and_works_again(server: RedisServer) -> None:
    cache = RedisCache(server.url)
    try:
        await cache.set("k", b"v", ttl_s=60)
        assert await cache.get("k") == b"v"
        server.stop()

        async with asyncio.timeout(GUARD_S):
            assert await cache.get("k") is None
            assert await cache.get("k") is None  # short-circuited while backing off
            await cache.set("k2", b"v", ttl_s=60)
            assert await cache.incr("ver") == 0
            assert await cache.version("ver") == 0
        stats = cache.stats()
        assert stats["available"] is False
        assert (stats["totalHits"], stats["totalMisses"]) == (1, 2)

        server.start()

        async def works() -> bool:
            await cache.set("k3", b"v3", ttl_s=60)
            return await cache.get("k3") == b"v3"

        await until(works, "the cache to work again")
        assert cache.stats()["available"] is True
        # The bump made during the outage was replayed.
        assert await cache.version("ver") == 1
    finally:
        await cache.close()


async def test_cache_invalidation_made_during_outage_is_replayed(server: RedisServer) -> None:
    cache = RedisCache(server.url)
    try:
        await cache.set("stale", b"old", ttl_s=60)
        await cache.set("fresh", b"ok", ttl_s=60)
        await cache.incr("npcs")
        assert server.command("SAVE").startswith(b"+OK")  # Redis will come back with this data
        server.stop()

        await cache.delete("stale")  # cannot reach Redis: remembered
        await cache.incr("npcs")
        assert cache.stats()["pendingInvalidations"] == 2

        server.start()

        async def usable() -> bool:
            return await cache.get("fresh") == b"ok"

        await until(usable, "the cache to come back")
        assert await cache.get("stale") is None
        assert await cache.version("npcs") == 2
        assert cache.stats()["pendingInvalidations"] == 0
    finally:
        await cache.close()


async def test_cache_pending_overflow_drops_the_whole_tier(server: RedisServer) -> None:
    cache = RedisCache(server.url, max_pending=2)
    other = Redis.from_url(server.url)
    try:
        for key in ("a", "b", "c", "d"):
            await cache.set(key, b"v", ttl_s=60)
        await cache.incr("npcs")
        await other.set("aicraft:presence:n1", b"A")  # not the cache's: must survive
        await other.aclose()
        assert server.command("SAVE").startswith(b"+OK")
        server.stop()

        await cache.delete("a", "b", "c")  # more than max_pending

        server.start()

        async def usable() -> bool:
            await cache.set("probe", b"p", ttl_s=60)
            return await cache.get("probe") == b"p"

        await until(usable, "the cache to come back")
        for key in ("a", "b", "c", "d"):
            assert await cache.get(key) is None
        assert await cache.version("npcs") == 1
        other = Redis.from_url(server.url)
        assert await other.get("aicraft:presence:n1") == b"A"
    finally:
        await other.aclose()
        await cache.close()


# -- a hung server (SIGSTOP): connections stay open and nothing answers ----------------------


async def test_hung_redis_is_detected_and_survived(server: RedisServer) -> None:
    a = RedisBus(server.url, socket_timeout_s=0.3, ping_interval_s=0.1)
    b = RedisBus(server.url, socket_timeout_s=0.3, ping_interval_s=0.1)
    got_a, got_b = Recorder(), Recorder()
    presence = RedisPresence(server.url, socket_timeout_s=0.3)
    cache = RedisCache(server.url)
    await a.start("A", got_a)
    await b.start("B", got_b)
    try:
        await presence.claim("n1", "A")
        await cache.set("k", b"v", ttl_s=60)
        server.pause()

        # The subscriber's idle PINGs go unanswered; the publisher's send times out.
        a.publish(EVENTS, b"into-the-void")
        await until(lambda: not b.stats()["connected"], "B to notice the silence")
        await until(lambda: not a.stats()["connected"], "A to notice the silence")
        async with asyncio.timeout(GUARD_S):
            with pytest.raises(PresenceUnavailable):
                await presence.holder("n1")
            assert await cache.get("k") is None

        server.resume()
        n = 0

        def flowing() -> bool:
            nonlocal n
            n += 1
            a.publish(EVENTS, b"back-%d" % n)
            return any(p.startswith(b"back-") for p in got_b.payloads)

        await until(flowing, "messages to flow after the server resumes")
        assert await presence.holder("n1") == "A"

        async def cache_back() -> bool:
            return await cache.get("k") == b"v"

        await until(cache_back, "the cache to answer again")
    finally:
        await a.close()
        await b.close()
        await presence.close()
        await cache.close()
