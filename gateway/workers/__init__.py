"""Pathfinding and mining strategy on a pool of worker processes.

The gateway wires :class:`WorkerPool` into the app under :data:`WORKER_POOL` (start it on
start-up, close it on clean-up) and calls :func:`run_path` / :func:`run_mining_plan` from the
bot session and the REST handlers. When a bot disconnects, ``pool.cancel_owner(npc_id)`` drops
its queued work.
"""

from aiohttp import web

from gateway.workers.pool import (
    OwnerBusy,
    PoolBusy,
    PoolClosed,
    PoolError,
    TaskFailed,
    TaskTimeout,
    WorkerCrashed,
    WorkerPool,
)
from gateway.workers.tasks import run_mining_plan, run_path

WORKER_POOL = web.AppKey("worker_pool", WorkerPool)

__all__ = [
    "WORKER_POOL",
    "OwnerBusy",
    "PoolBusy",
    "PoolClosed",
    "PoolError",
    "TaskFailed",
    "TaskTimeout",
    "WorkerCrashed",
    "WorkerPool",
    "run_mining_plan",
    "run_path",
]
