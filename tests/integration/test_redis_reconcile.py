"""After a Redis outage every viewer's set of online NPCs matches reality (docs/reliability.md).

Two in-process replicas on real ports share a throwaway PostgreSQL database and a throwaway
Redis that the tests stop and start. A viewer on replica A watches bots held by replica B.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.client import BotClient, ViewerClient
from gateway.testing.postgres_server import PostgresServer
from gateway.testing.redis_server import RedisServer
from tests.harness import RunningGateway, gateway_settings, running_gateway, token

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WAIT_S = 30.0  # deadline of one wait (generous: the machine is shared)
RECONCILE_S = 2.0  # reliability.md: once the replicas hear each other, viewers match within this


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def pair(
    redis: RedisServer, pg_server: PostgresServer, tmp_path: Path
) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    db = pg_server.create_database(f"rc_{uuid.uuid4().hex[:10]}")
    a = gateway_settings(tmp_path / "a", database_url=db, redis_url=redis.url, replica_id="ra")
    b = dataclasses.replace(a, data_dir=tmp_path / "b", replica_id="rb")
    async with running_gateway(a) as ga, running_gateway(b) as gb:
        yield ga, gb


def online(viewer: ViewerClient) -> set[str]:
    return {npc for npc, m in viewer.npcs.items() if m.get("online")}


@contextlib.asynccontextmanager
async def watching_two_bots(
    pair: tuple[RunningGateway, RunningGateway], first: str, second: str
) -> AsyncIterator[tuple[ViewerClient, BotClient, BotClient]]:
    """A viewer on A that sees two bots of B online, at x=1 and x=2."""
    a, b = pair
    async with (
        ViewerClient(a.ws, token("viewer", "far")) as viewer,
        BotClient(b.ws, token("npc", first)) as one,
        BotClient(b.ws, token("npc", second)) as two,
    ):
        await one.send_position(1, 64, 1)
        await two.send_position(2, 64, 2)
        await viewer.wait_for(lambda _: online(viewer) == {first, second}, WAIT_S)
        yield viewer, one, two


async def bus_heard_again(gateway: RunningGateway, redis_up_at: float) -> float:
    """Seconds from Redis coming back until this replica heard a peer again."""
    loop = asyncio.get_running_loop()
    end = loop.time() + WAIT_S
    while gateway.node.peers.last_heard_any() < redis_up_at:
        assert loop.time() < end, "the replicas never heard each other again"
        await asyncio.sleep(0.05)
    return time.monotonic() - redis_up_at


async def test_long_outage_viewers_get_joined_again(
    pair: tuple[RunningGateway, RunningGateway], redis: RedisServer
) -> None:
    """Over 15 s the other replica counts as dead and its bots get `left`; when it is heard
    again they must come back as `joined` (positions kept arriving for NPCs shown offline)."""
    a = pair[0]
    async with watching_two_bots(pair, "steady", "quitter") as (viewer, steady, quitter):
        redis.stop()
        await viewer.wait_for(lambda _: online(viewer) == set(), WAIT_S)  # silence: "dead"
        await quitter.close()  # leaves during the outage: nobody on A can hear it
        await steady.send_position(3, 64, 1)

        redis.start()
        up = time.monotonic()
        await bus_heard_again(a, up)
        heard = time.monotonic()
        await viewer.wait_for(lambda _: online(viewer) == {"steady"}, WAIT_S)
        assert time.monotonic() - heard <= RECONCILE_S + 1.0  # + scheduling on a shared box


async def test_short_outage_lost_left_is_repaired(
    pair: tuple[RunningGateway, RunningGateway], redis: RedisServer
) -> None:
    """A few seconds of outage: nobody is taken for dead, but a `left` published meanwhile
    was lost; after the outage the viewer must not keep showing that bot online."""
    a, b = pair
    async with watching_two_bots(pair, "stays", "goes") as (viewer, _, goes):
        redis.stop()

        async def bus_down() -> None:
            while b.node.bus.stats()["connected"] or a.node.bus.stats()["connected"]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)

        await asyncio.wait_for(bus_down(), WAIT_S)
        await goes.close()  # its `left` cannot cross now
        redis.start()
        await viewer.wait_for(lambda _: online(viewer) == {"stays"}, WAIT_S)


async def test_snapshot_after_redis_restarts_empty_shows_remote_bots_online(
    pair: tuple[RunningGateway, RunningGateway], redis: RedisServer
) -> None:
    """Redis comes back without the presence claims until their holders' next heartbeat. A
    viewer that connects meanwhile must still see the other replica's bots online: no `joined`
    would come later to correct it, since neither replica's view of who is online changed."""
    a, b = pair
    async with (
        ViewerClient(a.ws, token("viewer", "before")) as before,
        BotClient(b.ws, token("npc", "remote")) as remote,
    ):
        await remote.send_position(1, 64, 1)
        await before.wait_for(lambda _: online(before) == {"remote"}, WAIT_S)

        redis.flushall()  # as after a restart: every claim is gone, B re-creates its own in <= 5 s
        async with ViewerClient(a.ws, token("viewer", "after")) as after:
            await after.wait_for(lambda _: "remote" in after.npcs, WAIT_S)
            assert online(after) == {"remote"}
            # and it stays so once the claims are back (B's heartbeat) and positions flow
            await remote.send_position(2, 64, 1)
            await after.wait_for(lambda _: after.npcs["remote"].get("x") == 2, WAIT_S)
            assert online(after) == {"remote"} and online(before) == {"remote"}
