"""Two replicas on a Redis Cluster of three masters (`redis+cluster://`), one master killed.

Two in-process replicas on real ports share a throwaway PostgreSQL database and the session's
throwaway cluster. A bot on A, a viewer on B: B sees its positions and its joined/left over the
sharded bus. Then the master carrying the bus is SIGKILLed, the others mark it failed, it is
started again (same port, same nodes.conf: it rejoins, empty) and the replicas recover by
themselves. No replicas in the cluster: its slots are unavailable meanwhile. Bots in regions on
two other masters reach the viewer over a subscription on each of those masters.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.bus.cluster import TAG, wire_name
from gateway.cache.redis import DATA_PREFIX, RedisCache
from gateway.client import BotClient, ViewerClient
from gateway.redis_pool import redis_client
from gateway.testing.postgres_server import PostgresServer
from gateway.testing.redis_cluster import RedisClusterServers
from gateway.testing.redis_server import RedisServer
from tests.harness import Rest, RunningGateway, gateway_settings, running_gateway, token
from tests.integration.test_cluster_bus_shards import shard_subscribers, spread_regions
from tests.wait import until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WAIT_S = 30.0  # deadline of one wait (generous: the machine is shared)
OUTAGE_METRICS = 20  # metrics a bot sends while a master is down


@pytest.fixture
async def pair(
    redis_cluster_url: str, pg_server: PostgresServer, tmp_path: Path
) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    db = pg_server.create_database(f"rcl_{uuid.uuid4().hex[:10]}")
    a = gateway_settings(
        tmp_path / "a", database_url=db, redis_url=redis_cluster_url, replica_id="ra"
    )
    b = dataclasses.replace(a, data_dir=tmp_path / "b", replica_id="rb")
    async with running_gateway(a) as ga, running_gateway(b) as gb:
        yield ga, gb


def bus_master(cluster: RedisClusterServers) -> RedisServer:
    """The master that owns the bus's slot: the only one that does not answer MOVED."""
    for node in cluster.nodes:
        if not node.command("SPUBLISH", TAG + "probe", "x").startswith(b"-MOVED"):
            return node
    raise AssertionError("no master owns the bus's slot")


async def test_a_viewer_follows_a_bot_on_another_replica_across_a_master_restart(
    pair: tuple[RunningGateway, RunningGateway], redis_cluster: RedisClusterServers
) -> None:
    a, b = pair
    async with (
        ViewerClient(b.ws, token("viewer", "far")) as viewer,
        BotClient(a.ws, token("npc", "walker")) as walker,
    ):
        await walker.send_position(1, 64, 1)
        await viewer.wait_for_npc("walker", WAIT_S, online=True, x=1)
        async with BotClient(a.ws, token("npc", "visitor")) as visitor:
            await visitor.send_position(9, 64, 9)
            await viewer.wait_for_npc("visitor", WAIT_S, online=True, x=9)
        await viewer.wait_for(lambda npcs: not npcs.get("visitor", {}).get("online"), WAIT_S)

        victim = bus_master(redis_cluster)
        victim.kill()
        redis_cluster.wait_state("fail")  # the survivors noticed: every slot refuses now
        for n in range(OUTAGE_METRICS):  # accepted meanwhile: for the store, not Redis
            assert await walker.send_metric("steps", n)
        victim.start()
        redis_cluster.wait_state("ok")

        # Recovered by itself: positions cross from A to B again (a fresh one per poll, as
        # any sent while the bus was down were dropped, at most once).
        x = 100

        async def seen_again() -> bool:
            nonlocal x
            if viewer.npcs.get("walker", {}).get("x") == x:
                return True
            x += 1
            await walker.send_position(x, 64, 1)
            return False

        await until(seen_again, "B's viewer to see A's bot move again", WAIT_S, interval_s=0.2)
        assert viewer.npcs["walker"]["online"] is True

        # Joined and left cross again too.
        async with BotClient(a.ws, token("npc", "latecomer")) as latecomer:
            await latecomer.send_position(3, 64, 3)
            await viewer.wait_for_npc("latecomer", WAIT_S, online=True, x=3)
        await viewer.wait_for(lambda npcs: not npcs.get("latecomer", {}).get("online"), WAIT_S)

    # The store took every NPC and every metric the replicas accepted, outage or not.
    rest = Rest(b.http, token("admin", "ops"))
    try:
        for npc in ("walker", "visitor", "latecomer"):
            status, _ = await rest.call("GET", f"/api/npcs/{npc}")
            assert status == 200, npc

        async def all_steps_stored() -> bool:
            _, page = await rest.call("GET", "/api/metrics?npc=walker&name=steps&limit=100")
            values = sorted(m["value"] for m in page["metrics"])
            return values == [float(n) for n in range(OUTAGE_METRICS)]

        await until(all_steps_stored, "the metrics sent during the outage", WAIT_S)
    finally:
        await rest.close()


async def test_the_bus_keeps_carrying_while_another_master_is_down(
    pair: tuple[RunningGateway, RunningGateway], redis_cluster: RedisClusterServers
) -> None:
    """The cluster refuses keyed commands once a master failed, but the bus's master still
    carries sharded pub/sub: positions keep crossing meanwhile."""
    a, b = pair
    async with (
        ViewerClient(b.ws, token("viewer", "far")) as viewer,
        BotClient(a.ws, token("npc", "runner")) as runner,
    ):
        await runner.send_position(1, 64, 1)
        await viewer.wait_for_npc("runner", WAIT_S, online=True, x=1)

        bus = bus_master(redis_cluster)
        victim = next(node for node in redis_cluster.nodes if node is not bus)
        victim.kill()
        redis_cluster.wait_state("fail")
        for x in (2, 3):
            await runner.send_position(x, 64, 1)
            await viewer.wait_for_npc("runner", WAIT_S, x=x)
        victim.start()
        redis_cluster.wait_state("ok")


async def test_cache_invalidations_made_while_a_master_is_down_are_replayed(
    redis_cluster: RedisClusterServers, redis_cluster_url: str
) -> None:
    """Keys spread over every master; one dies, the cluster refuses commands, deletes made
    meanwhile are remembered and replayed once it is back (the survivors' keys go too)."""
    cache = RedisCache(redis_cluster_url)
    raw = redis_client(redis_cluster_url, wait_s=None)
    keys = [f"k{i}" for i in range(30)]
    try:
        for key in keys:
            await cache.set(key, b"v", ttl_s=600)
        assert await raw.exists(*(DATA_PREFIX + k for k in keys)) == len(keys)

        victim = redis_cluster.nodes[0]
        victim.kill()
        redis_cluster.wait_state("fail")
        await cache.delete(*keys)
        assert cache.stats()["pendingInvalidations"] == len(keys)
        victim.start()
        redis_cluster.wait_state("ok")

        async def replayed() -> bool:
            await cache.get("probe")  # any call replays first, once the backoff is over
            return cache.stats()["pendingInvalidations"] == 0

        await until(replayed, "the remembered deletes to be replayed", WAIT_S, interval_s=0.1)
        assert await raw.exists(*(DATA_PREFIX + k for k in keys)) == 0
    finally:
        await raw.aclose()
        await cache.close()


async def test_a_viewer_hears_regions_spread_over_the_masters(
    pair: tuple[RunningGateway, RunningGateway], redis_cluster: RedisClusterServers
) -> None:
    """Bots of A in two regions on two masters (neither the bus's); B's viewer, without a
    filter, hears both, over a connection to each region's own master."""
    a, b = pair
    regions = spread_regions(redis_cluster, 2)
    xs = [float(region.rsplit(":", 2)[1]) * 512 + 5 for region in regions]
    async with (
        ViewerClient(b.ws, token("viewer", "far")) as viewer,
        BotClient(a.ws, token("npc", "west")) as west,
        BotClient(a.ws, token("npc", "east")) as east,
    ):
        for bot, x in zip((west, east), xs, strict=True):
            await bot.send_position(x, 64, 5)
        await viewer.wait_for_npc("west", WAIT_S, online=True, x=xs[0])
        await viewer.wait_for_npc("east", WAIT_S, online=True, x=xs[1])
        # Its first windows came as copies on the bus's master; B subscribes to the region
        # once it reads it in the registry (within a second).
        masters = [redis_cluster.master_of(wire_name(region)) for region in regions]
        assert len({m.port for m in masters}) == 2

        def on_their_own_masters() -> bool:
            return all(
                shard_subscribers(node, wire_name(region)) == (1 if node is master else 0)
                for region, master in zip(regions, masters, strict=True)
                for node in redis_cluster.nodes
            )

        await until(on_their_own_masters, "B subscribed on each region's master", WAIT_S)
        for bot, x in zip((west, east), xs, strict=True):  # and hears them there
            await bot.send_position(x + 1, 64, 5)
        await viewer.wait_for_npc("west", WAIT_S, x=xs[0] + 1)
        await viewer.wait_for_npc("east", WAIT_S, x=xs[1] + 1)
