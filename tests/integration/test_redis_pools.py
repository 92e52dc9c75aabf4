"""Redis client pools are bounded: a burst of requests does not leave dozens of idle
connections behind (issue #10 item 9)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.redis_pool import REDIS_POOL_MAX
from gateway.testing.redis_server import RedisServer
from tests.harness import Rest, gateway_settings, running_gateway, token

pytestmark = pytest.mark.redis


def connections(server: RedisServer) -> int:
    return server.command("CLIENT", "LIST").decode().count(" addr=")


async def test_burst_of_requests_stays_within_the_pool_bounds(
    tmp_path: Path, redis_url: str, redis_server: RedisServer
) -> None:
    async with running_gateway(gateway_settings(tmp_path, redis_url=redis_url)) as gw:
        rest = Rest(gw.http, token("viewer", "reader"))
        try:
            before = connections(redis_server)
            for _ in range(3):  # churn: bursts of concurrent cache reads
                answers = await asyncio.gather(
                    *(rest.call("GET", f"/api/commands/{i:032x}") for i in range(150))
                )
                assert {status for status, _ in answers} == {404}
            after = connections(redis_server)
            # bus (publish + subscribe), presence and cache: each pool at most REDIS_POOL_MAX
            assert after - before <= 2 * REDIS_POOL_MAX, (before, after)
            assert after <= 2 + 3 * REDIS_POOL_MAX + 1, after
        finally:
            await rest.close()
