"""Redis clients with a bounded connection pool (bus, presence, cache, history, pending).

redis-py's default pool opens a connection for every concurrent command and keeps them all:
a burst of requests left dozens idle per replica. A blocking pool caps them; a command that
finds every connection busy waits for one (at most its socket timeout) instead of opening more.

`redis+cluster://host:port[,host:port...]` names a Redis Cluster by its seed nodes: the
adapters then get a `RedisCluster`, which routes each command to the master owning its key's
slot. Its pools are capped per node too, but do not wait: a command past the cap fails at once.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.redis_url import cluster_parts, cluster_seeds, is_cluster_url

AnyRedis = Redis | RedisCluster

REDIS_POOL_MAX = 16  # connections per client (per node of a cluster)


def redis_client(url: str, *, wait_s: float | None, **kwargs: Any) -> AnyRedis:
    """A client for `url` whose pool holds at most REDIS_POOL_MAX connections; `wait_s` is how
    long a command may wait for a free one (None: as long as it takes; not on a cluster)."""
    if is_cluster_url(url):
        return _cluster_client(url, **kwargs)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=REDIS_POOL_MAX, timeout=wait_s, **kwargs
    )
    return Redis.from_pool(pool)  # the client closes the pool with itself


def _cluster_client(url: str, **kwargs: Any) -> RedisCluster:
    userinfo, _ = cluster_parts(url)
    username, _, password = userinfo.rstrip("@").partition(":")
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster_seeds(url)],
        max_connections=REDIS_POOL_MAX,
        username=unquote(username) or None,
        password=unquote(password) or None,
        **kwargs,
    )


def fail_fast_client(
    url: str, connect_timeout_s: float, socket_timeout_s: float | None, **kwargs: Any
) -> AnyRedis:
    """A bounded client that never retries by itself: the caller's own loop or backoff
    decides when to try again, so a dead Redis surfaces at once (within the timeouts).

    A cluster client retries once, at once: its pools hand out idle connections unchecked, so
    after a master restarted the first command on each would meet a dead socket (the failure
    drops them all, and refreshes the slot map, before the retry)."""
    return redis_client(
        url,
        wait_s=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 1 if is_cluster_url(url) else 0),
        health_check_interval=0,  # no PINGs of its own either: our loops and timeouts notice
        **kwargs,
    )
