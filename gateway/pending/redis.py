"""Pending commands in Redis: one list per NPC, taken whole in one transaction (LRANGE+DEL).

The list's own expiry is pushed forward with each command, so an NPC that never comes back
leaves nothing behind; each entry carries its own deadline, checked when taken.
"""

from __future__ import annotations

from typing import Any

import msgpack

from gateway.pending.base import QUEUE_TTL_S
from gateway.redis_pool import fail_fast_client


def _key(npc_id: str) -> str:
    return f"aicraft:pending:{npc_id}"


class RedisPendingCommands:
    backend = "redis"

    def __init__(self, url: str, connect_timeout_s: float = 1.0, socket_timeout_s: float = 2.0):
        self._redis = fail_fast_client(url, connect_timeout_s, socket_timeout_s)

    async def push(self, npc_id: str, message: dict[str, Any], expires_ms: int) -> None:
        key = _key(npc_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, msgpack.packb([expires_ms, message], use_bin_type=True))
            pipe.expire(key, int(QUEUE_TTL_S) + 5)
            await pipe.execute()

    async def take(self, npc_id: str, now_ms: int) -> list[tuple[int, dict[str, Any]]]:
        key = _key(npc_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            raw, _ = await pipe.execute()
        taken = []
        for item in raw:
            expires_ms, message = msgpack.unpackb(item, raw=False)
            if expires_ms > now_ms:
                taken.append((expires_ms, message))
        return taken

    async def close(self) -> None:
        await self._redis.aclose()
