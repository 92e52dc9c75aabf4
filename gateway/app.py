"""The aiohttp application: routes, middlewares, and the replica's lifecycle. No side effects at
import time.

The replica itself is put together in `gateway.compose` (one composition root) and runs for
the app's lifetime. Shutdown (SIGTERM, `shut_down`): `Node.drain` while still listening (health
turns `draining`, requests in flight are answered, the current window and metrics batch are
written, sockets close with 1001), then the replica's parts close in reverse order.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from gateway import direct_ws
from gateway.api import commands, minecraft, npcs, prometheus, system, tokens, world
from gateway.api.auth import WRITE_LIMITER, WriteLimiter, auth_middleware
from gateway.api.errors import error_middleware
from gateway.bot_session import npc_endpoint
from gateway.bridge import MINECRAFT_BRIDGE
from gateway.bus import MemoryBroker
from gateway.compose import running_replica
from gateway.config import Settings
from gateway.keys import NODE, SETTINGS
from gateway.viewer_session import viewer_endpoint


def create_app(settings: Settings, *, broker: MemoryBroker | None = None) -> web.Application:
    """The replica's app. `broker` lets several in-process replicas share a memory bus (tests)."""
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[SETTINGS] = settings
    direct_ws.configure(settings.direct_dispatch)
    app[WRITE_LIMITER] = WriteLimiter(settings.rest_write_per_s, settings.rest_write_burst)

    async def replica_ctx(app: web.Application) -> AsyncIterator[None]:
        async with running_replica(settings, broker) as replica:
            app[NODE] = replica.node
            app[MINECRAFT_BRIDGE] = replica.bridge
            if replica.worker_pool is not None:
                from gateway.workers import WORKER_POOL

                app[WORKER_POOL] = replica.worker_pool
            yield

    app.cleanup_ctx.append(replica_ctx)
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
    """Every runner's shutdown drains the replica (before its parts are closed)."""
    node = app.get(NODE)
    if node is not None:
        await node.drain()


async def shut_down(runner: web.AppRunner) -> None:
    """SIGTERM: drain while still listening (health answers `draining`, new sockets are
    refused: a load balancer sees it), then stop listening and close everything."""
    await runner.app[NODE].drain()
    await runner.cleanup()


def _add_optional_routes(app: web.Application) -> None:
    """Routes of parts that may be absent from this build (pathfinding, the Minecraft bridge)."""
    with contextlib.suppress(ImportError):
        from gateway.api import pathfind

        app.router.add_post("/api/pathfind", pathfind.pathfind)
        app.router.add_post("/api/strategy/mining", pathfind.mining_strategy)
