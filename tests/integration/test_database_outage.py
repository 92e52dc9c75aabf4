"""A gateway on a PostgreSQL server of its own that the tests stop and start (contract §6.4).

In-process gateway on a real port, real WebSocket clients, a real PostgreSQL server: the only
thing the tests do to the gateway is take its database away and give it back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Rest, RunningGateway, gateway_settings, running_gateway, token
from tests.servers import PostgresServer

pytestmark = pytest.mark.postgres

WAIT_S = 20.0  # deadline of one poll (generous: the machine is shared)


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    """A server of this test's own, so stopping it leaves the session's server alone."""
    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
async def gw(own_pg: PostgresServer, tmp_path: Path) -> AsyncIterator[RunningGateway]:
    url = own_pg.create_database(f"o_{uuid.uuid4().hex[:8]}")
    settings = gateway_settings(tmp_path, database_url=url)
    async with running_gateway(settings) as gateway:
        yield gateway


@pytest.fixture
async def rest(gw: RunningGateway) -> AsyncIterator[Rest]:
    client = Rest(gw.http, token("admin", "ops"))
    yield client
    await client.close()


async def poll(check: Callable[[], Awaitable[bool]], deadline_s: float = WAIT_S) -> None:
    """Poll `check` until it is true, failing after `deadline_s` (never a bare sleep)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not await check():
        if loop.time() > end:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.05)


async def test_health_stays_200_but_lists_the_open_breaker(
    gw: RunningGateway, rest: Rest, own_pg: PostgresServer
) -> None:
    assert await rest.call("GET", "/api/health") == (
        200,
        {"status": "ok", "replica": "r1", "degraded": []},
    )
    own_pg.stop()

    async def database_open() -> bool:
        status, _ = await rest.call("GET", "/api/npcs")
        assert status == 503
        return gw.node.breakers["database"].state.value == "OPEN"

    await poll(database_open)
    status, body = await rest.call("GET", "/api/health")
    assert (
        status == 200
    )  # every replica shares the database: taking all out of rotation helps no one
    assert body == {"status": "ok", "replica": "r1", "degraded": ["database"]}
