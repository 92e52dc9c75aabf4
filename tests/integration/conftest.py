"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.workers import WorkerPool
from tests.harness import Rest, RunningGateway, token


@pytest.fixture
async def admin(gw: RunningGateway) -> AsyncIterator[Rest]:
    """An operator's REST client on the module's own `gw` fixture."""
    rest = Rest(gw.http, token("admin", "ops"))
    yield rest
    await rest.close()


@pytest.fixture
async def make_pool() -> AsyncIterator[Callable[..., Any]]:
    """Start worker pools on demand; all are closed after the test."""
    pools: list[WorkerPool] = []

    async def make(workers: int = 1, queue_max: int = 8, **kw: Any) -> WorkerPool:
        kw.setdefault("warmup", None)  # these tests do not need the search kernel loaded
        pool = WorkerPool(workers, queue_max, **kw)
        pools.append(pool)
        await pool.start()
        return pool

    yield make
    for pool in pools:
        await pool.close()
