"""The aiohttp application factory: wiring and lifecycle. No side effects at import time.

Each resource has one `cleanup_ctx` generator, so a failed start unwinds only what started.
Shutdown order (SIGTERM): the runner calls `Node.drain` (health turns `draining`, the current
window and metrics batch are written, sockets close with 1001), then the contexts unwind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from gateway import direct_ws
from gateway.api import commands, minecraft, npcs, prometheus, system, tokens, world
from gateway.api.auth import WRITE_LIMITER, WriteLimiter, auth_middleware
from gateway.api.errors import error_middleware
from gateway.bot_session import npc_endpoint
from gateway.breaker import MINECRAFT_BRIDGE_BREAKER
from gateway.bridge import MINECRAFT_BRIDGE, MinecraftBridge
from gateway.bus import Bus, MemoryBroker, MemoryBus
from gateway.cache import Cache, MemoryCache
from gateway.config import Settings
from gateway.history import History, MemoryHistory
from gateway.history.memory import shared_log
from gateway.keys import NODE, SETTINGS
from gateway.node import Node
from gateway.pending import MemoryPendingCommands, PendingCommands
from gateway.pending.memory import shared_pending
from gateway.presence import MemoryPresence, Presence
from gateway.store import Store, StoreUnavailable, open_store
from gateway.viewer_session import viewer_endpoint

log = logging.getLogger(__name__)

STORE_CONNECT_DEADLINE_S = 60.0


def make_bus(settings: Settings, broker: MemoryBroker | None = None) -> Bus:
    if settings.redis_url:
        from gateway.bus.redis import RedisBus

        return RedisBus(settings.redis_url)
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


def create_app(settings: Settings, *, broker: MemoryBroker | None = None) -> web.Application:
    """The replica's app. `broker` lets several in-process replicas share a memory bus (tests)."""
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[SETTINGS] = settings
    direct_ws.configure(settings.direct_dispatch)
    app[WRITE_LIMITER] = WriteLimiter(settings.rest_write_per_s, settings.rest_write_burst)

    async def node_ctx(app: web.Application) -> AsyncIterator[None]:
        store = open_store(settings)
        await open_store_with_retry(store, STORE_CONNECT_DEADLINE_S)
        node = Node(
            settings,
            store,
            make_bus(settings, broker),
            make_presence(settings),
            make_cache(settings),
            make_history(settings, broker),
            make_pending(settings, broker),
        )
        app[NODE] = node
        await node.start()
        watcher = asyncio.create_task(node.hub.watch_stalls(), name="stall-watcher")
        try:
            yield
        finally:
            if node.state != "draining":
                await node.drain()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await node.close()
            closers = (node.presence.close, node.cache.close, node.commands.pending.close)
            for closer in (*closers, store.close):
                with contextlib.suppress(Exception):
                    await closer()

    async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
        try:
            from gateway.workers import WORKER_POOL, WorkerPool
        except ImportError:  # pathfinding not built into this version
            yield
            return
        pool = WorkerPool(settings.workers, max_per_owner=settings.path_in_flight)
        if settings.eager_workers:
            # Workers warm up (import, JIT) in the background; requests queue until ready.
            await pool.start(wait_ready=False)
        else:
            pool.start_on_demand()
        app[WORKER_POOL] = pool
        app[NODE].worker_pool = pool
        try:
            yield
        finally:
            await pool.close()

    async def bridge_ctx(app: web.Application) -> AsyncIterator[None]:
        if not settings.rcon_url:
            app[MINECRAFT_BRIDGE] = None
            yield
            return
        bridge = MinecraftBridge(settings.rcon_url, app[NODE].breakers[MINECRAFT_BRIDGE_BREAKER])
        app[MINECRAFT_BRIDGE] = bridge
        try:
            yield
        finally:
            await bridge.close()

    app.cleanup_ctx.append(node_ctx)
    app.cleanup_ctx.append(workers_ctx)
    app.cleanup_ctx.append(bridge_ctx)
    app.on_shutdown.append(_drain)

    app.router.add_get("/ws/npc", npc_endpoint)
    app.router.add_get("/ws/viewer", viewer_endpoint)
    system.add_routes(app)
    prometheus.add_routes(app)
    npcs.add_routes(app)
    commands.add_routes(app)
    minecraft.add_routes(app)
    tokens.add_routes(app)
    world.add_routes(app)
    _add_optional_routes(app)
    return app


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """The runner every server of this app uses (serve, tests, scripts).

    aiohttp's `keepalive_timeout` also runs from the moment a connection opens and closes it
    while no complete request head has arrived; its default (an hour) let silent or half-sent
    heads hold sockets forever. Once a request is being handled (a WebSocket included, on
    either the direct-dispatch or the ordinary path) the timer no longer applies.
    """
    kwargs.setdefault("keepalive_timeout", app[SETTINGS].head_timeout_s)
    return web.AppRunner(app, **kwargs)


async def _drain(app: web.Application) -> None:
    node = app.get(NODE)
    if node is not None and node.state != "draining":
        await node.drain()


def _add_optional_routes(app: web.Application) -> None:
    """Routes of parts that may be absent from this build (pathfinding, the Minecraft bridge)."""
    with contextlib.suppress(ImportError):
        from gateway.api import pathfind

        app.router.add_post("/api/pathfind", pathfind.pathfind)
        app.router.add_post("/api/strategy/mining", pathfind.mining_strategy)
