"""Running one contract test against each backend of an interface (memory, one Redis node,
a Redis Cluster)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

import pytest

# The params of a fixture whose tests run on the embedded backend, on a real Redis and on a
# real Redis Cluster of three masters.
MEMORY_AND_REDIS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=pytest.mark.redis),
]


def backend_url(request: pytest.FixtureRequest) -> str:
    """The Redis URL `request.param` names ("" for the embedded backend)."""
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    if request.param == "cluster":
        return str(request.getfixturevalue("redis_cluster_url"))
    return ""


class _Closable(Protocol):
    def close(self) -> Awaitable[None]: ...


B = TypeVar("B", bound=_Closable)


@asynccontextmanager
async def backend_for(
    request: pytest.FixtureRequest, memory: Callable[[], B], redis: Callable[[str], B]
) -> AsyncIterator[B]:
    """The backend `request.param` names (Redis on the session's servers), closed afterwards."""
    url = backend_url(request)
    made = redis(url) if url else memory()
    try:
        yield made
    finally:
        await made.close()
