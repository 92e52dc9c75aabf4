"""Region channels (docs/scaling.md) with real replica processes, PostgreSQL and Redis.

A replica hears only the regions its viewers watch (all of them for a viewer without filter,
none without viewers), follows its viewers as they move, and its REST still shows every NPC's
latest position, read from the shared store rather than from frames it no longer hears.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from gateway.client import BotClient, ViewerClient
from gateway.testing.postgres_server import PostgresServer
from tests.harness import Rest, token
from tests.integration.test_cluster import WAIT_S, Cluster, running_cluster, until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

R1 = [0, 0, 511, 511]  # one region of the overworld
R2 = [4608, 0, 5119, 511]  # another, far away


@pytest.fixture(scope="module")
def pair(pg_server: PostgresServer) -> Iterator[Cluster]:
    with running_cluster(pg_server, 2) as running:
        yield running


@pytest.fixture
async def rest_b(pair: Cluster) -> AsyncIterator[Rest]:
    """An operator's REST client on replica B, the one whose viewers the tests move."""
    client = Rest(pair[1].http, token("admin", "ops"))
    yield client
    await client.close()


async def _bus(client: Rest) -> dict[str, Any]:
    status, perf = await client.call("GET", "/api/performance")
    assert status == 200
    bus: dict[str, Any] = perf["bus"]
    return bus


def _hears(client: Rest, regions: int, every: bool = False) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        bus = await _bus(client)
        return bus["regions"] == regions and bus["allRegions"] is every

    return check


def _rest_x(client: Rest, npc: str, x: float) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        status, body = await client.call("GET", f"/api/npcs/{npc}")
        return status == 200 and body.get("x") == x

    return check


async def test_subscriptions_follow_the_viewers(pair: Cluster, rest_b: Rest) -> None:
    a, b = pair[0], pair[1]
    near = BotClient(a.ws, token("npc", "reg-near"))
    far = BotClient(a.ws, token("npc", "reg-far"))
    viewer = ViewerClient(b.ws, token("viewer", "reg-viewer"))
    try:
        await near.start()
        await far.start()
        await until(_hears(rest_b, 0), "B without viewers to hear no region", cluster=pair)
        # Nobody on B hears A's frames, yet B's REST shows where the bots are: from the store.
        await near.send_position(100, 64, 100, dim="overworld")
        await far.send_position(5000, 64, 100, dim="overworld")
        await until(_rest_x(rest_b, "reg-far", 5000), "B's REST to show the far bot")

        await viewer.start()
        await viewer.subscribe("overworld", R1)
        await until(_hears(rest_b, 1), "B to hear the viewer's one region", cluster=pair)
        await near.send_position(101, 64, 100, dim="overworld")
        await viewer.wait_for_npc("reg-near", WAIT_S, x=101)

        await viewer.subscribe("overworld", R2)  # the viewer moves: B follows it
        await until(_hears(rest_b, 1), "B to hear the new region", cluster=pair)
        await far.send_position(5001, 64, 100, dim="overworld")
        await viewer.wait_for_npc("reg-far", WAIT_S, x=5001)

        await viewer.subscribe()  # no filter: every region
        await until(_hears(rest_b, 0, every=True), "B to hear every region", cluster=pair)
        await near.send_position(102, 64, 100, dim="overworld")
        await viewer.wait_for_npc("reg-near", WAIT_S, x=102)

        await viewer.close()
        await until(_hears(rest_b, 0), "B without viewers to hear nothing again", cluster=pair)
    finally:
        await viewer.close()
        await near.close()
        await far.close()
        await rest_b.close()


async def test_rest_is_fresh_for_a_bot_that_left_the_heard_regions(
    pair: Cluster, rest_b: Rest
) -> None:
    """B hears R1 only; a bot crosses from R1 to R2 and keeps moving there. B saw it leave,
    then hears nothing of it: its REST must follow the store, not keep the last frame heard."""
    async with (
        BotClient(pair[0].ws, token("npc", "reg-crosser")) as bot,
        ViewerClient(pair[1].ws, token("viewer", "reg-watch-r1")) as viewer,
    ):
        await viewer.subscribe("overworld", R1)
        await until(_hears(rest_b, 1), "B to hear R1", cluster=pair)
        await bot.send_position(200, 64, 200, dim="overworld")
        await viewer.wait_for_npc("reg-crosser", WAIT_S, x=200)
        await bot.send_position(4700, 64, 200, dim="overworld")  # crosses into R2
        # Published to the region it left too: B's viewer sees it go (§11).
        await until(lambda: "reg-crosser" not in viewer.npcs, "the viewer to see it leave R1")
        await until(_rest_x(rest_b, "reg-crosser", 4700), "B's REST to show the crossing")
        for x in range(4701, 4706):  # moves on inside R2, unheard by B
            await bot.send_position(x, 64, 200, dim="overworld")
        await until(_rest_x(rest_b, "reg-crosser", 4705), "B's REST to follow the bot in R2")


async def test_rest_is_fresh_after_hearing_every_region_again(pair: Cluster, rest_b: Rest) -> None:
    """B forgot a bot while it heard only R1; back to every region, the bot has not moved
    since: B's REST must still show where it went meanwhile, not the last frame it heard."""
    async with (
        BotClient(pair[0].ws, token("npc", "reg-idle")) as bot,
        ViewerClient(pair[1].ws, token("viewer", "reg-widen")) as viewer,
    ):
        await until(_hears(rest_b, 0, every=True), "B to hear every region", cluster=pair)
        await bot.send_position(5000, 64, 300, dim="overworld")
        await viewer.wait_for_npc("reg-idle", WAIT_S, x=5000)
        await viewer.subscribe("overworld", R1)
        await until(_hears(rest_b, 1), "B to hear R1 only", cluster=pair)
        await bot.send_position(5003, 64, 300, dim="overworld")  # unheard by B
        await until(_rest_x(rest_b, "reg-idle", 5003), "B's REST to follow the unheard bot")
        await viewer.subscribe()
        await until(_hears(rest_b, 0, every=True), "B to hear every region again", cluster=pair)
        await until(_rest_x(rest_b, "reg-idle", 5003), "B's REST to keep the bot's position")
