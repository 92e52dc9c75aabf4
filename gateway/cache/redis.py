"""Redis cache: the shared tier every replica reads, behind the same small interface.

The cache is an optimisation, so no method raises: while Redis is unreachable `get` is a miss,
`set` is skipped, `version` answers 0 and `incr` answers 0. After a failure the cache stays
"down" for a short backoff (exponential with jitter, capped) so a dead server is not hammered,
and only one request at a time probes it again.

Invalidation is not lost: a `delete` or `incr` that cannot reach Redis is remembered, and is
replayed before anything else once Redis answers again; until then every `get` is a miss, so
an entry that should have been invalidated is never served. The memory is bounded
(`max_pending` keys): past it, the replay drops every data key under the prefix instead
(SCAN + UNLINK; version counters are kept and bumped), which is always correct, only colder.
On a Redis Cluster keys are spread over the masters by slot; SCAN walks every master.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.exceptions import ClusterDownError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.backoff import backoff_delay
from gateway.cache.base import hit_stats
from gateway.redis_pool import fail_fast_client

DATA_PREFIX = "aicraft:cache:"
VERSION_PREFIX = "aicraft:cachever:"  # not under DATA_PREFIX: a wipe must keep the counters

# Errors that mean "Redis is not answering" (BusyLoadingError, a restart still loading its
# dataset, is a ConnectionError too; a cluster that lost a master answers CLUSTERDOWN). Any
# other RedisError is a one-off failed call.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ClusterDownError, OSError)


class RedisCache:
    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        max_pending: int = 10_000,
        connect_timeout_s: float = 0.25,
        socket_timeout_s: float = 0.5,
        backoff_cap_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # No library retries, short timeouts: a dead Redis must cost milliseconds per request.
        self._redis = fail_fast_client(url, connect_timeout_s, socket_timeout_s)
        self._max_pending = max_pending
        self._backoff_cap_s = backoff_cap_s
        self._clock = clock
        self._failures = 0
        self._down_until = 0.0
        self._probing = False
        self._pending_deletes: set[str] = set()
        self._pending_incrs: dict[str, int] = {}
        self._wipe_on_recovery = False
        self._replay_lock = asyncio.Lock()
        self.hits = 0
        self.misses = 0
        self.errors = 0

    # -- the interface -------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        _, value = await self._run(lambda: self._redis.get(DATA_PREFIX + key))
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return cast("bytes | None", value)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        px = max(1, int(ttl_s * 1000))
        await self._run(lambda: self._redis.set(DATA_PREFIX + key, value, px=px))

    async def delete(self, *keys: str) -> None:
        if not keys:
            return
        full = [DATA_PREFIX + k for k in keys]
        done, _ = await self._run(lambda: self._redis.delete(*full))
        if not done:
            self._remember_deletes(full)

    async def incr(self, key: str) -> int:
        """Bump a version counter; 0 when Redis is unreachable (the bump is replayed later)."""
        vkey = VERSION_PREFIX + key
        done, value = await self._run(lambda: self._redis.incr(vkey))
        if done:
            return int(value)
        self._pending_incrs[vkey] = self._pending_incrs.get(vkey, 0) + 1
        return 0

    async def version(self, key: str) -> int:
        done, value = await self._run(lambda: self._redis.get(VERSION_PREFIX + key))
        if not done or value is None:
            return 0
        try:
            return int(value)
        except ValueError:
            self.errors += 1
            return 0

    async def close(self) -> None:
        await self._redis.aclose()

    def stats(self) -> dict[str, Any]:
        return {
            **hit_stats(self.backend, self.hits, self.misses),
            "errors": self.errors,
            "available": self._failures == 0,
            "pendingInvalidations": len(self._pending_deletes) + len(self._pending_incrs),
        }

    # -- availability and replay ---------------------------------------------------------

    async def _run(self, command: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """Send `command` if Redis is usable now, keeping track of whether it is up:
        (True, its answer), or (False, None) when it was not sent or failed."""
        if not await self._usable():
            return False, None
        try:
            value = await command()
        except _UNREACHABLE:
            self._mark_down()
            return False, None
        except RedisError:
            self.errors += 1
            return False, None
        self._mark_up()
        return True, value

    async def _usable(self) -> bool:
        """Whether to talk to Redis now. False while down (backoff running, or another request
        is already probing). After a failure, or with invalidations pending, one request
        replays them (or PINGs) first, and everyone else waits for that or misses."""
        if self._failures and (self._probing or self._clock() < self._down_until):
            return False
        if not (self._failures or self._has_pending()):
            return True
        self._probing = True
        try:
            async with self._replay_lock:
                await self._replay()
            self._mark_up()
            return True
        except _UNREACHABLE:
            self._mark_down()
        except RedisError:
            self.errors += 1
        finally:
            self._probing = False
        return False

    def _has_pending(self) -> bool:
        return bool(self._pending_deletes or self._pending_incrs or self._wipe_on_recovery)

    async def _replay(self) -> None:
        if not self._has_pending():
            await self._redis.ping()
            return
        deletes = list(self._pending_deletes)
        incrs = dict(self._pending_incrs)
        wipe = self._wipe_on_recovery
        if wipe:
            batch: list[bytes] = []
            async for key in self._redis.scan_iter(match=DATA_PREFIX + "*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await self._redis.unlink(*batch)
                    batch.clear()
            if batch:
                await self._redis.unlink(*batch)
        async with self._redis.pipeline(transaction=False) as pipe:
            # One key per UNLINK: a cluster pipeline refuses keys of several slots in one
            # (and its own `unlink` runs at once, outside the pipeline: hence execute_command).
            for key in () if wipe else deletes:
                pipe.execute_command("UNLINK", key)
            for key, count in incrs.items():
                pipe.incrby(key, count)
            await pipe.execute()
        # Only what was replayed: a failure meanwhile may have queued more.
        self._pending_deletes.difference_update(deletes)
        for key, count in incrs.items():
            left = self._pending_incrs.get(key, 0) - count
            if left > 0:
                self._pending_incrs[key] = left
            else:
                self._pending_incrs.pop(key, None)
        if wipe:
            self._wipe_on_recovery = False

    def _remember_deletes(self, keys: list[str]) -> None:
        if self._wipe_on_recovery:
            return
        self._pending_deletes.update(keys)
        if len(self._pending_deletes) > self._max_pending:
            self._pending_deletes.clear()
            self._wipe_on_recovery = True

    def _mark_down(self) -> None:
        self.errors += 1
        self._failures += 1
        delay = backoff_delay(self._failures - 1, base_s=0.05, cap_s=self._backoff_cap_s)
        self._down_until = self._clock() + delay

    def _mark_up(self) -> None:
        self._failures = 0
