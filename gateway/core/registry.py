"""NPC registry reads and writes: cache-aside in front of the store, invalidated on every write.

Tiers: registry rows and lists are warm (300 s), profiles and metric queries cold (600 s).
Groups of keys (every list page, every metric query) are invalidated by bumping a version
counter that is part of their keys, never by scanning for keys. Maps are returned with the
freshest live position this replica knows (`live`) and `online` from presence overlaid. A
replica that hears only some regions (docs/scaling.md) reads the positions it does not hear from the
store, which every replica writes each tick: a cached row may be minutes old.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson

from gateway.cache import COLD_TTL_S, WARM_TTL_S, Cache
from gateway.presence import Presence
from gateway.store import Store
from gateway.types import MetricRow, NpcMap, PositionUpdate

log = logging.getLogger(__name__)

T = TypeVar("T")

LIST_VERSION = "v:npcs"
METRICS_VERSION = "v:metrics"
PAGE = 500
POSITION_KEYS = ("x", "y", "z", "yaw", "pitch", "dim")


def _npc_key(npc_id: str) -> str:
    return f"npc:{npc_id}"


def _profile_key(npc_id: str) -> str:
    return f"profile:{npc_id}"


class Registry:
    def __init__(
        self,
        store: Store,
        cache: Cache,
        presence: Presence,
        live: Mapping[str, PositionUpdate],
        recent_status: Mapping[str, str],
    ) -> None:
        self.store = store
        self.cache = cache
        self.presence = presence
        self.live = live
        self.recent_status = recent_status
        # Whether `live` may lack this NPC's latest position (a region this replica does not
        # hear, or did not hear for a while): then the store has it.
        self.unheard: Callable[[str], bool] = lambda npc: False

    # -- cache helpers ------------------------------------------------------------------------

    async def _cached(self, key: str) -> Any:
        try:
            raw = await self.cache.get(key)
        except Exception:  # the cache is an optimisation: a failing one is a miss
            return None
        return None if raw is None else orjson.loads(raw)

    async def _remember(self, key: str, value: Any, ttl_s: float) -> None:
        try:
            await self.cache.set(key, orjson.dumps(value), ttl_s)
        except Exception:
            log.debug("cache set failed for %s", key)

    async def _read_through(
        self, key: str | None, load: Callable[[], Awaitable[T]], ttl_s: float
    ) -> T:
        """`key`'s cached value, else what `load` answers, remembered for `ttl_s` unless None.
        No key (a version counter the cache could not answer): straight from `load`."""
        value: T | None = await self._cached(key) if key is not None else None
        if value is None:
            value = await load()
            if key is not None and value is not None:
                await self._remember(key, value, ttl_s)
        return value

    async def _version(self, key: str) -> int:
        try:
            return await self.cache.version(key)
        except Exception:
            return -1

    async def invalidate_npc(self, npc_id: str) -> None:
        try:
            await self.cache.delete(_npc_key(npc_id))
            await self.cache.incr(LIST_VERSION)
        except Exception:
            log.warning("cache invalidation failed for %s", npc_id)

    async def invalidate_metrics(self) -> None:
        try:
            await self.cache.incr(METRICS_VERSION)
        except Exception:
            log.warning("metrics cache invalidation failed")

    # -- overlay ------------------------------------------------------------------------------

    def freshen(self, npc: NpcMap) -> NpcMap:
        """The map with the latest position and status this replica has seen overlaid (the
        store is up to a tick behind, and a cached row up to the warm TTL)."""
        npc_id = npc["id"]
        live = self.live.get(npc_id)
        status = self.recent_status.get(npc_id)
        if live is None and status is None:
            return npc
        out = dict(npc)
        if live is not None:
            for key in POSITION_KEYS:
                out[key] = live[key]
        if status is not None:
            out["status"] = status
        return out

    async def _unheard_positions(self, npcs: list[NpcMap]) -> dict[str, NpcMap]:
        """Store rows of the NPCs whose positions this replica does not hear."""
        unheard = [n["id"] for n in npcs if n["id"] not in self.live and self.unheard(n["id"])]
        if not unheard:
            return {}
        try:
            rows = await self.store.list_npcs(only_ids=unheard, limit=len(unheard))
        except Exception:  # the store is down: the cached rows are the best we have
            log.warning("could not read %d positions from the store", len(unheard))
            return {}
        return {r["id"]: r for r in rows}

    async def _overlay(self, npcs: list[NpcMap]) -> list[NpcMap]:
        online = await self.presence.online([n["id"] for n in npcs])
        stored = await self._unheard_positions(npcs)
        out = []
        for n in npcs:
            row = stored.get(n["id"])
            if row is not None:
                n = {**n, **{k: row[k] for k in POSITION_KEYS if k in row}}
            out.append({**self.freshen(n), "online": n["id"] in online})
        return out

    # -- reads --------------------------------------------------------------------------------

    async def get(self, npc_id: str) -> NpcMap | None:
        npc = await self._read_through(
            _npc_key(npc_id), lambda: self.store.get_npc(npc_id), WARM_TTL_S
        )
        return None if npc is None else (await self._overlay([npc]))[0]

    async def list(
        self,
        *,
        status: str | None = None,
        role: str | None = None,
        online: bool | None = None,
        after_id: str | None = None,
        limit: int = 100,
    ) -> list[NpcMap]:
        if online is not None:
            # Presence changes by the second: these pages are not cached.
            present = await self.presence.online()
            rows = await self.store.list_npcs(
                status=status,
                role=role,
                only_ids=present if online else None,
                exclude_ids=None if online else present,
                after_id=after_id,
                limit=limit,
            )
            return await self._overlay(rows)
        version = await self._version(LIST_VERSION)
        key = f"npcs:{version}:{status}:{role}:{after_id}:{limit}" if version >= 0 else None
        rows = await self._read_through(
            key,
            lambda: self.store.list_npcs(status=status, role=role, after_id=after_id, limit=limit),
            WARM_TTL_S,
        )
        return await self._overlay(rows)

    async def everyone(self) -> list[NpcMap]:
        """Every registered NPC with its latest state (the viewers' `snapshot`)."""
        out: list[NpcMap] = []
        after: str | None = None
        while True:
            page = await self.list(after_id=after, limit=PAGE)
            out.extend(page)
            if len(page) < PAGE:
                return out
            after = page[-1]["id"]

    # -- writes -------------------------------------------------------------------------------

    async def ensure(self, npc_id: str) -> NpcMap:
        known = await self._cached(_npc_key(npc_id))
        if known is not None:
            return known
        before = await self.store.get_npc(npc_id)
        npc = before or await self.store.ensure_npc(npc_id)
        if before is None:
            await self.invalidate_npc(npc_id)
        return npc

    async def create(self, npc_id: str, name: str, role: str, status: str) -> NpcMap:
        npc = await self.store.create_npc(npc_id, name, role, status)
        await self.invalidate_npc(npc_id)
        return (await self._overlay([npc]))[0]

    async def update(self, npc_id: str, changes: dict[str, Any]) -> NpcMap | None:
        npc = await self.store.update_npc(npc_id, changes)
        await self.invalidate_npc(npc_id)
        return None if npc is None else (await self._overlay([npc]))[0]

    async def delete(self, npc_id: str) -> bool:
        gone = await self.store.delete_npc(npc_id)
        await self.invalidate_npc(npc_id)
        try:
            await self.cache.delete(_profile_key(npc_id))
        except Exception:
            log.warning("cache invalidation failed for profile %s", npc_id)
        await self.invalidate_metrics()
        return gone

    async def set_status(self, npc_id: str, status: str) -> None:
        await self.store.set_status(npc_id, status)
        await self.invalidate_npc(npc_id)

    # -- profiles and metrics -----------------------------------------------------------------

    async def get_profile(self, npc_id: str) -> dict[str, Any] | None:
        return await self._read_through(
            _profile_key(npc_id), lambda: self.store.get_profile(npc_id), COLD_TTL_S
        )

    async def profile_changed(self, npc_id: str) -> None:
        try:
            await self.cache.delete(_profile_key(npc_id))
        except Exception:
            log.warning("cache invalidation failed for profile %s", npc_id)

    async def put_profile(self, npc_id: str, profile: dict[str, Any]) -> dict[str, Any]:
        saved = await self.store.put_profile(npc_id, profile)
        await self.profile_changed(npc_id)
        return saved

    async def metrics(
        self, *, npc: str | None, name: str | None, since_ms: int | None, limit: int
    ) -> list[MetricRow]:
        version = await self._version(METRICS_VERSION)
        key = f"metrics:{version}:{npc}:{name}:{since_ms}:{limit}" if version >= 0 else None

        async def load() -> list[list[Any]]:
            found = await self.store.query_metrics(
                npc=npc, name=name, since_ms=since_ms, limit=limit
            )
            return [list(r) for r in found]  # as the cache gives them back

        rows = await self._read_through(key, load, COLD_TTL_S)
        return [MetricRow(*r) for r in rows]
