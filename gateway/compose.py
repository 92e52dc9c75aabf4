"""The composition root: every part of a replica is built here, once, and passed in.

The configuration picks the adapters (PostgreSQL or SQLite; Redis or in-process bus, cache,
presence, history, pending commands), the worker pool when this build has pathfinding, the
metrics journal, the Minecraft bridge when an RCON URL is set. The node receives them all at
construction; nothing is attached to it later. `running_replica` starts them in order and
closes them in reverse, whatever failed on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.breaker import MINECRAFT_BRIDGE_BREAKER
from gateway.bridge import MinecraftBridge
from gateway.bus import Bus, MemoryBroker, MemoryBus
from gateway.cache import Cache, MemoryCache
from gateway.config import Settings
from gateway.core.journal import Journal
from gateway.core.node import Node
from gateway.history import History, MemoryHistory
from gateway.history.memory import shared_log
from gateway.pending import MemoryPendingCommands, PendingCommands
from gateway.pending.memory import shared_pending
from gateway.presence import MemoryPresence, Presence
from gateway.store import Store, StoreUnavailable, open_store

if TYPE_CHECKING:
    from gateway.workers import WorkerPool

log = logging.getLogger(__name__)

STORE_CONNECT_DEADLINE_S = 60.0


def make_bus(settings: Settings, broker: MemoryBroker | None = None) -> Bus:
    if settings.redis_url:
        from gateway.bus.cluster import redis_bus

        return redis_bus(settings.redis_url)
    return MemoryBus(broker)


def make_presence(settings: Settings) -> Presence:
    if settings.redis_url:
        from gateway.presence.redis import RedisPresence

        return RedisPresence(settings.redis_url)
    return MemoryPresence()


def make_cache(settings: Settings) -> Cache:
    if settings.redis_url:
        from gateway.cache.redis import RedisCache

        return RedisCache(settings.redis_url)
    return MemoryCache()


def make_history(settings: Settings, broker: MemoryBroker | None = None) -> History:
    if settings.redis_url:
        from gateway.history.redis import RedisHistory

        return RedisHistory(settings.redis_url, max_events=settings.history_events)
    return MemoryHistory(shared_log(broker) if broker is not None else None)


def make_pending(settings: Settings, broker: MemoryBroker | None = None) -> PendingCommands:
    if settings.redis_url:
        from gateway.pending.redis import RedisPendingCommands

        return RedisPendingCommands(settings.redis_url)
    return shared_pending(broker) if broker is not None else MemoryPendingCommands()


def make_worker_pool(settings: Settings) -> WorkerPool | None:
    """The pathfinding pool, not started; None when this build has no pathfinding."""
    try:
        from gateway.workers import WorkerPool
    except ImportError:
        return None
    return WorkerPool(settings.workers, max_per_owner=settings.path_in_flight)


def make_journal(settings: Settings) -> Journal | None:
    return Journal(settings.journal_dir, "metrics") if settings.metrics_journal else None


async def open_store_with_retry(store: Store, deadline_s: float) -> None:
    """The database may come up after us (a cluster starting at once): retry until a deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    delay = 0.2
    while True:
        try:
            await store.open()
            return
        except StoreUnavailable as exc:
            if loop.time() + delay > end:
                raise
            log.warning("database not reachable yet (%s); retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


@dataclass(frozen=True, slots=True)
class Replica:
    """What one running replica is made of."""

    node: Node
    worker_pool: WorkerPool | None
    bridge: MinecraftBridge | None


@contextlib.asynccontextmanager
async def running_replica(
    settings: Settings, broker: MemoryBroker | None = None
) -> AsyncIterator[Replica]:
    """Build and start a replica; on exit drain it (if nobody did) and close every part.

    `broker` lets several in-process replicas share a memory bus (tests)."""
    async with contextlib.AsyncExitStack() as stack:
        store = open_store(settings)
        await open_store_with_retry(store, STORE_CONNECT_DEADLINE_S)
        stack.push_async_callback(store.close)
        presence, cache = make_presence(settings), make_cache(settings)
        pending = make_pending(settings, broker)
        for close in (presence.close, cache.close, pending.close):
            stack.push_async_callback(_quietly, close)
        pool = make_worker_pool(settings)
        node = Node(
            settings,
            store,
            make_bus(settings, broker),
            presence,
            cache,
            make_history(settings, broker),
            pending,
            worker_pool=pool,
            journal=make_journal(settings),
        )
        await node.start()
        stack.push_async_callback(node.close)
        if pool is not None:
            if settings.eager_workers:
                # Workers warm up (import, JIT) in the background; requests queue until ready.
                await pool.start(wait_ready=False)
            else:
                pool.start_on_demand()
            stack.push_async_callback(pool.close)
        bridge = None
        if settings.rcon_url:
            bridge = MinecraftBridge(settings.rcon_url, node.breakers[MINECRAFT_BRIDGE_BREAKER])
            stack.push_async_callback(bridge.close)
        # First on the way out, while the pool still answers what is in flight; a no-op when
        # the app's shutdown hook has drained it already.
        stack.push_async_callback(node.drain)
        yield Replica(node, pool, bridge)


async def _quietly(close: object) -> None:
    # A client of a dependency that is down may fail to close; shutdown goes on.
    with contextlib.suppress(Exception):
        await close()  # type: ignore[operator]
