"""A gateway on a PostgreSQL server of its own that the tests stop and start (docs/reliability.md).

In-process gateway on a real port, real WebSocket clients, a real PostgreSQL server: the only
thing the tests do to the gateway is take its database away and give it back.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.testing.postgres_server import PostgresServer
from tests.harness import Rest, RunningGateway, gateway_settings, running_gateway
from tests.wait import until

pytestmark = pytest.mark.postgres

WAIT_S = 20.0  # deadline of one poll (generous: the machine is shared)
poll = functools.partial(until, deadline_s=WAIT_S, interval_s=0.05)  # checks are REST calls


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    """A server of this test's own, so stopping it leaves the session's server alone."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
async def gw(own_pg: PostgresServer, tmp_path: Path) -> AsyncIterator[RunningGateway]:
    url = own_pg.create_database(f"o_{uuid.uuid4().hex[:8]}")
    # A 1 s open period: the tests watch recovery, not the production 60 s lockout.
    settings = gateway_settings(tmp_path, database_url=url, db_breaker_reset_s=1.0)
    async with running_gateway(settings) as gateway:
        yield gateway


async def test_health_stays_200_but_lists_the_open_breaker(
    gw: RunningGateway, admin: Rest, own_pg: PostgresServer
) -> None:
    assert await admin.call("GET", "/api/health") == (
        200,
        {"status": "ok", "replica": "r1", "degraded": []},
    )
    own_pg.stop()

    async def database_open() -> bool:
        status, _ = await admin.call("GET", "/api/npcs")
        assert status == 503
        return gw.node.breakers["database"].state.value == "OPEN"

    await poll(database_open, "the database breaker to open")
    status, body = await admin.call("GET", "/api/health")
    assert (
        status == 200
    )  # every replica shares the database: taking all out of rotation helps no one
    assert body == {"status": "ok", "replica": "r1", "degraded": ["database"]}


async def test_bot_that_connects_during_an_outage_is_registered_and_written_after(
    gw: RunningGateway, admin: Rest, own_pg: PostgresServer
) -> None:
    own_pg.stop()
    bot = await gw.bot("outage-born")  # the gateway cannot register it now
    await bot.send({"type": "status", "status": "mining"})
    for step in range(5):
        await bot.send({"type": "pos", "x": step, "y": 64, "z": 7})
        await bot.send({"type": "metric", "name": "ore", "value": step})
    await bot.send({"type": "event", "name": "task:completed", "data": {"task": "dig"}})
    await bot.roundtrip()  # everything above was accepted
    gw.node.tick()
    gw.node.metrics.wake()

    own_pg.start()

    async def written() -> bool:
        status, npc = await admin.call("GET", "/api/npcs/outage-born")
        if status != 200 or npc.get("x") != 4 or npc.get("status") != "mining":
            return False
        status, page = await admin.call("GET", "/api/metrics?npc=outage-born&limit=100")
        return status == 200 and len(page["metrics"]) == 6  # 5 ore + the task:completed

    await poll(written, "the write to land")
    _, page = await admin.call("GET", "/api/metrics?npc=outage-born&name=ore&limit=100")
    assert sorted(m["value"] for m in page["metrics"]) == [0, 1, 2, 3, 4]
    _, perf = await admin.call("GET", "/api/performance")
    batches = perf["batchProcessor"]
    assert batches["positions"]["dropped"] == 0
    assert batches["metrics"]["dropped"] == 0
    assert batches["registrations"] == {"pending": 0, "registered": 1, "dropped": 0}
    await bot.close()


async def test_positions_of_an_npc_the_database_does_not_know_are_counted_as_dropped(
    gw: RunningGateway, admin: Rest
) -> None:
    bot = await gw.bot("short-lived")
    await bot.send({"type": "pos", "x": 1, "y": 64, "z": 1})
    await bot.roundtrip()
    gw.node.tick()

    async def stored() -> bool:
        # In the database itself: REST shows the live position before the write lands, and
        # a delete racing that write would make it a second drop.
        npc = await gw.node.store._store.get_npc("short-lived")
        return npc is not None and npc.get("x") == 1

    await poll(stored, "the row to be stored")
    # Deleted behind the gateway's back (another tool, a restore): nothing matches any more.
    await gw.node.store._store._pool.execute("DELETE FROM npcs WHERE id = 'short-lived'")
    await bot.send({"type": "pos", "x": 2, "y": 64, "z": 1})
    await bot.roundtrip()
    gw.node.tick()

    async def counted() -> bool:
        _, perf = await admin.call("GET", "/api/performance")
        return perf["batchProcessor"]["positions"]["dropped"] == 1

    await poll(counted, "the count")


async def test_a_snapshot_while_the_database_is_down_shows_who_is_online(
    gw: RunningGateway, own_pg: PostgresServer
) -> None:
    """Without the registry a viewer's snapshot is what the replica has seen move; a bot that
    has left since must not be shown online (no `left` would ever correct it)."""
    stays, goes = await gw.bot("stays"), await gw.bot("goes")
    await stays.send({"type": "pos", "x": 1, "y": 64, "z": 1})
    await goes.send({"type": "pos", "x": 2, "y": 64, "z": 2})

    async def both_moved() -> bool:
        return {"stays", "goes"} <= gw.node.live.keys()

    await poll(both_moved, "both to move")
    await goes.ws.close()

    async def gone() -> bool:
        return "goes" not in gw.node.hub.bots

    await poll(gone, "it to be gone")
    own_pg.stop()
    _, snapshot = await gw.viewer()
    online = {n["id"]: n["online"] for n in snapshot["npcs"]}
    assert online == {"stays": True, "goes": False}
