"""Redis presence: one key per NPC, `{aicraft:presence}:<npc>` -> replica id, with a TTL.

Guarantees (see base.py): `claim` is atomic (SET ... GET inside MULTI, so the later claim wins
and learns the earlier holder); `release` is a compare-and-delete script; `refresh` re-sets
(not merely extends) the claims the replica still holds, so after a Redis restart they come
back with the next heartbeat, and it never takes an NPC back from another replica. A set
indexes the NPC ids for `online(None)` (cleaned lazily), so nothing ever runs KEYS.
When Redis cannot be reached every method raises `PresenceUnavailable`, quickly.

Every key carries the hash tag `{aicraft:presence}`: on a Redis Cluster they share one slot, so
the transaction, the scripts and MGET (which touch NPC keys and the index together) run there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterator, Sequence
from typing import TypeVar

from redis.exceptions import RedisError

from gateway.redis_pool import fail_fast_client

KEY_PREFIX = "{aicraft:presence}:"
INDEX_KEY = "{aicraft:presence}-index"  # a set of NPC ids; outside KEY_PREFIX on purpose
_CHUNK = 1000  # keys per MGET / script call: keeps each Redis command short

_T = TypeVar("_T")

# KEYS[1] = NPC key, KEYS[2] = index; ARGV = replica, npc id.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] = index, KEYS[2..] = NPC keys; ARGV = their ids. Drops ids whose key is gone,
# atomically, so a claim landing meanwhile keeps its index entry.
_PRUNE = """
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('SREM', KEYS[1], ARGV[i - 1])
  end
end
return 0
"""

# KEYS[1] = index, KEYS[2..] = NPC keys; ARGV[1] = replica, ARGV[2] = ttl ms, ARGV[3..] = ids.
# Returns the ids now held by another replica (the caller has lost them).
_REFRESH = """
local lost = {}
for i = 2, #KEYS do
  local current = redis.call('GET', KEYS[i])
  if current == false or current == ARGV[1] then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
    redis.call('SADD', KEYS[1], ARGV[i + 1])
  else
    lost[#lost + 1] = ARGV[i + 1]
  end
end
return lost
"""


class PresenceUnavailable(Exception):
    """Redis cannot be reached: who holds which bot is unknown right now."""


def _key(npc_id: str) -> str:
    return KEY_PREFIX + npc_id


def _chunks(items: Sequence[_T], size: int = _CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RedisPresence:
    def __init__(
        self,
        url: str,
        ttl_s: float = 15.0,
        *,
        connect_timeout_s: float = 0.5,
        socket_timeout_s: float = 1.0,
    ) -> None:
        self.ttl_s = ttl_s
        self._ttl_ms = max(1, int(ttl_s * 1000))
        # Fail fast: a dead Redis must surface as PresenceUnavailable at once. Ids and replica
        # names are text.
        self._redis = fail_fast_client(
            url, connect_timeout_s, socket_timeout_s, decode_responses=True
        )
        self._release = self._redis.register_script(_RELEASE)
        self._refresh = self._redis.register_script(_REFRESH)
        self._prune = self._redis.register_script(_PRUNE)

    async def claim(self, npc_id: str, replica: str) -> str | None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(_key(npc_id), replica, px=self._ttl_ms, get=True)
                pipe.sadd(INDEX_KEY, npc_id)
                previous, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise PresenceUnavailable(f"claim {npc_id!r}: {exc}") from exc
        if previous is None or previous == replica:
            return None
        return str(previous)

    async def release(self, npc_id: str, replica: str) -> None:
        try:
            await self._release(keys=[_key(npc_id), INDEX_KEY], args=[replica, npc_id])
        except (RedisError, OSError) as exc:
            raise PresenceUnavailable(f"release {npc_id!r}: {exc}") from exc

    async def holder(self, npc_id: str) -> str | None:
        try:
            value = await self._redis.get(_key(npc_id))
        except (RedisError, OSError) as exc:
            raise PresenceUnavailable(f"holder {npc_id!r}: {exc}") from exc
        return str(value) if value is not None else None

    async def online(self, npc_ids: Collection[str] | None = None) -> set[str]:
        try:
            if npc_ids is None:
                return await self._online_all()
            ids = list(npc_ids)
            found: set[str] = set()
            for chunk in _chunks(ids):
                values = await self._redis.mget([_key(i) for i in chunk])
                found.update(i for i, v in zip(chunk, values, strict=True) if v is not None)
            return found
        except (RedisError, OSError) as exc:
            raise PresenceUnavailable(f"online: {exc}") from exc

    async def _online_all(self) -> set[str]:
        ids = [str(m) for m in await self._redis.smembers(INDEX_KEY)]
        found: set[str] = set()
        stale: list[str] = []
        for chunk in _chunks(ids):
            values = await self._redis.mget([_key(i) for i in chunk])
            for npc_id, value in zip(chunk, values, strict=True):
                if value is not None:
                    found.add(npc_id)
                else:
                    stale.append(npc_id)
        # Expired claims leave their id in the index: prune it so the set stays small.
        for chunk in _chunks(stale):
            await self._prune(keys=[INDEX_KEY, *(_key(i) for i in chunk)], args=chunk)
        return found

    async def refresh(self, replica: str, npc_ids: Collection[str]) -> None:
        await self.refresh_held(replica, npc_ids)

    async def refresh_held(self, replica: str, npc_ids: Collection[str]) -> set[str]:
        """`refresh`, returning the ids another replica now holds (this one lost them)."""
        ids = list(npc_ids)
        if not ids:
            return set()
        try:
            # Chunks at once rather than in a pipeline: a cluster client refuses scripts in one.
            results = await asyncio.gather(
                *(
                    self._refresh(
                        keys=[INDEX_KEY, *(_key(i) for i in chunk)],
                        args=[replica, self._ttl_ms, *chunk],
                    )
                    for chunk in _chunks(ids)
                )
            )
        except (RedisError, OSError) as exc:
            raise PresenceUnavailable(f"refresh: {exc}") from exc
        return {str(m) for lost in results for m in lost}

    async def close(self) -> None:
        await self._redis.aclose()
