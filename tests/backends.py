"""Running one contract test against each backend of an interface (memory, then Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

import pytest

# The params of a fixture whose tests run on the embedded backend and on a real Redis.
MEMORY_AND_REDIS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


class _Closable(Protocol):
    def close(self) -> Awaitable[None]: ...


B = TypeVar("B", bound=_Closable)


@asynccontextmanager
async def backend_for(
    request: pytest.FixtureRequest, memory: Callable[[], B], redis: Callable[[str], B]
) -> AsyncIterator[B]:
    """The backend `request.param` names (Redis on the session's server), closed afterwards."""
    if request.param == "redis":
        made = redis(request.getfixturevalue("redis_url"))
    else:
        made = memory()
    try:
        yield made
    finally:
        await made.close()
