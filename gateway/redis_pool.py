"""Redis clients with a bounded connection pool (bus, presence, cache).

redis-py's default pool opens a connection for every concurrent command and keeps them all:
a burst of requests left dozens idle per replica. A blocking pool caps them; a command that
finds every connection busy waits for one (at most its socket timeout) instead of opening more.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

REDIS_POOL_MAX = 16  # connections per client; a replica has one cache, one presence, two bus


def redis_client(url: str, *, wait_s: float | None, **kwargs: Any) -> Redis:
    """A client for `url` whose pool holds at most REDIS_POOL_MAX connections; `wait_s` is how
    long a command may wait for a free one (None: as long as it takes)."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=REDIS_POOL_MAX, timeout=wait_s, **kwargs
    )
    return Redis.from_pool(pool)  # the client closes the pool with itself
