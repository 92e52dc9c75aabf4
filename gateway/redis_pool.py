"""Redis clients with a bounded connection pool (bus, presence, cache).

redis-py's default pool opens a connection for every concurrent command and keeps them all:
a burst of requests left dozens idle per replica. A blocking pool caps them; a command that
finds every connection busy waits for one (at most its socket timeout) instead of opening more.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

REDIS_POOL_MAX = 16  # connections per client; a replica has one cache, one presence, two bus


def redis_client(url: str, *, wait_s: float | None, **kwargs: Any) -> Redis:
    """A client for `url` whose pool holds at most REDIS_POOL_MAX connections; `wait_s` is how
    long a command may wait for a free one (None: as long as it takes)."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=REDIS_POOL_MAX, timeout=wait_s, **kwargs
    )
    return Redis.from_pool(pool)  # the client closes the pool with itself


def fail_fast_client(
    url: str, connect_timeout_s: float, socket_timeout_s: float | None, **kwargs: Any
) -> Redis:
    """A bounded client that never retries by itself: the caller's own loop or backoff
    decides when to try again, so a dead Redis surfaces at once (within the timeouts)."""
    return redis_client(
        url,
        wait_s=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,  # no PINGs of its own either: our loops and timeouts notice
        **kwargs,
    )
