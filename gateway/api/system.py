"""Health, live performance figures, Prometheus exposition, the OpenAPI document, the page."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.api.errors import RETRY_AFTER_S, ApiError, json_response
from gateway.breaker import BreakerStatus
from gateway.core.node import Node
from gateway.core.telemetry import total
from gateway.datafiles import openapi_path
from gateway.keys import NODE

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
OPENAPI = openapi_path()


async def health(request: web.Request) -> web.Response:
    """200 while this replica serves; `degraded` names the breakers not CLOSED. An open breaker
    keeps 200: every replica shares the dependency, so failing over to another helps no one."""
    node = request.app[NODE]
    degraded = [b.name for b in node.breakers if b.state is not BreakerStatus.CLOSED]
    response = json_response(
        {"status": node.state, "replica": node.replica, "degraded": sorted(degraded)},
        200 if node.state == "ok" else 503,
    )
    if node.state != "ok":
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def performance_figures(node: Node) -> dict[str, Any]:
    pool = node.worker_pool
    return {
        "replica": node.replica,
        "database": node.store.stats(),
        "cache": node.cache.stats(),
        "batchProcessor": node.batch_stats(),
        "workerPool": pool.stats()
        if pool is not None
        else {"totalWorkers": 0, "busyWorkers": 0, "queuedTasks": 0, "totalTasksProcessed": 0},
        "circuitBreakers": node.breakers.stats(),
        "connections": node.hub.stats(),
        "bus": {**node.bus.stats(), **node.region_stats()},
        "tick": node.ticker.stats() if node.ticker is not None else {"periodMs": 0},
        "viewers": {
            "framesBroadcast": node.hub.frames_broadcast,
            "closedSlow": int(total(node.telemetry.viewers_closed_slow)),
            "framesMerged": int(total(node.telemetry.viewer_frames_merged)),
        },
        "world": node.world.stats(),
        "process": {
            "maxRssKb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "gc": node.gc_stats(),
            # Background tasks (closes, acks, path jobs): running now, and ended in an error.
            "tasks": {"running": node.tasks.pending, "failed": node.tasks.failed},
        },
        "history": node.history_stats(),
        "commands": node.commands.stats(),
    }


async def performance(request: web.Request) -> web.Response:
    return json_response(performance_figures(request.app[NODE]))


async def openapi(request: web.Request) -> web.StreamResponse:
    if not OPENAPI.exists():
        raise ApiError(404, "not_found", "no OpenAPI document in this build")
    return web.FileResponse(OPENAPI, headers={"Content-Type": "application/yaml"})


async def index(request: web.Request) -> web.StreamResponse:
    page = WEB_DIR / "index.html"
    if not page.exists():
        raise ApiError(404, "not_found", "the map page is not part of this build")
    return web.FileResponse(page)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/performance", performance)
    app.router.add_get("/api/openapi.yaml", openapi)
    app.router.add_get("/", index)
    if WEB_DIR.is_dir():
        app.router.add_static("/static/", WEB_DIR, show_index=False)
