"""The glue the gateway calls: validate a request, run it on the pool, shape the answer.

Validation is split by cost. Scalars (start, goal, limits, position, top) are checked here on
the event loop, so a bad request fails fast without a queue slot; the bulky parts (the world's
cells or bitset, the deposit list) are checked inside the worker, so their cost never lands on
the loop. Either way a malformed request ends as ``ProtocolError(BAD_MESSAGE)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from typing import Any

from gateway.protocol import MAX_COORD, MAX_Y, MIN_Y, ErrorCode, ProtocolError, job_result
from gateway.workers.astar import DEFAULT_MAX_NODES, find_path
from gateway.workers.gridcache import ByteBoundedCache
from gateway.workers.mining import parse_mining, rank_deposits
from gateway.workers.pool import (
    OwnerBusy,
    PoolBusy,
    PoolClosed,
    TaskFailed,
    TaskTimeout,
    WorkerCrashed,
    WorkerPool,
)
from gateway.workers.world import MAX_CELLS, Grid, decode_world
from gateway.world.arena import SectionArena
from gateway.world.box import box_cells
from gateway.world.grid import model_grid
from gateway.world.model import ModelRef, WorldModel
from gateway.world.sections import parse_dim

DEFAULT_TIMEOUT_MS = 5000
MAX_TIMEOUT_MS = 60_000
MAX_NODES_CAP = 10_000_000
MINING_TIMEOUT_S = 5.0

Cell = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class PathJob:
    """A checked path request; `world` is still the wire map (checked in the worker), or None
    for a search on the shared model (`dim` names it; `model` is filled in on the loop)."""

    start: Cell
    goal: Cell
    world: Any
    max_nodes: int
    timeout_ms: float
    dim: str = "overworld"
    model: ModelRef | None = None


def _bad(message: str, ref: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_MESSAGE, message, ref)


def _ref(msg: dict[str, Any]) -> Any:
    ref = msg.get("ref")
    if ref is None or type(ref) is int or (type(ref) is str and len(ref) <= 128):
        return ref
    raise _bad("ref must be a string (≤128) or an integer", None)


def _cell(value: Any, what: str, ref: Any) -> Cell:
    """A block cell from [x, y, z]; fractional positions (a bot's feet) floor to their block."""
    if type(value) is not list or len(value) != 3:
        raise _bad(f"{what} must be [x, y, z]", ref)
    for v in value:
        if not (type(v) is int or type(v) is float) or not math.isfinite(v):
            raise _bad(f"{what} must hold three finite numbers", ref)
    x, y, z = (math.floor(v) for v in value)
    if not (abs(x) <= MAX_COORD and abs(z) <= MAX_COORD and MIN_Y <= y <= MAX_Y):
        raise _bad(f"{what} is out of the world's range", ref)
    return x, y, z


def parse_path(msg: dict[str, Any], ref: Any = None) -> PathJob:
    """Check a `path` message / POST /api/pathfind body, all but the world's contents."""
    start = _cell(msg.get("start"), "start", ref)
    goal = _cell(msg.get("goal"), "goal", ref)
    world = msg.get("world")
    dim = "overworld"
    if world is None:
        dim = parse_dim(msg.get("dim"), ref)  # §9: searched on the shared model
    elif type(world) is not dict:
        raise _bad("world must be a map", ref)
    max_nodes = msg.get("max_nodes")
    if max_nodes is None:
        max_nodes = DEFAULT_MAX_NODES
    elif type(max_nodes) is not int or not 1 <= max_nodes <= MAX_NODES_CAP:
        raise _bad(f"max_nodes must be an integer 1-{MAX_NODES_CAP}", ref)
    timeout_ms = msg.get("timeout_ms")
    if timeout_ms is None:
        timeout_ms = DEFAULT_TIMEOUT_MS
    elif not (type(timeout_ms) is int or type(timeout_ms) is float) or not (
        0 < timeout_ms <= MAX_TIMEOUT_MS
    ):
        raise _bad(f"timeout_ms must be a number in (0, {MAX_TIMEOUT_MS}]", ref)
    return PathJob(start, goal, world, max_nodes, float(timeout_ms), dim)


# -- worker side (these run in the pool's processes) ---------------------------------------------


GRID_CACHE_BYTES = 32 << 20  # per worker: a few large worlds, never unbounded (§5)
GRID_CACHE: ByteBoundedCache[tuple[Any, ...], Grid] = ByteBoundedCache(GRID_CACHE_BYTES)


def _decode(world: dict[str, Any]) -> Grid:
    # A bot tends to send the same area again and again: a worker keeps recently decoded
    # bitset worlds (keyed by the exact string) instead of decoding megabytes every time. The
    # cache counts the key string and the decoded cells against its byte budget.
    origin, size, solid = world.get("origin"), world.get("size"), world.get("solid")
    if type(solid) is str and type(origin) is list and type(size) is list:
        if all(type(v) is int for v in (*origin, *size)):
            key = (tuple(origin), tuple(size), solid)
            grid = GRID_CACHE.get(key)
            if grid is None:
                grid = decode_world(world)
                GRID_CACHE.put(key, grid, len(solid) + len(grid.solid))
            return grid
    return decode_world(world)


@functools.lru_cache(maxsize=4)
def _arena(path: str) -> SectionArena:
    # Mapped once per worker; later requests name the same file and read it in place.
    return SectionArena.attach(path)


_MODEL_GRIDS: dict[tuple[str, int, tuple[int, ...]], tuple[int, Grid]] = {}
_MODEL_GRIDS_MAX = 2


def _model_grid(ref: ModelRef) -> Grid:
    # A worker keeps the grids of its last two boxes while the model has not changed since
    # (the arena's generation): repeated requests over a quiet area skip the unpacking.
    arena = _arena(ref.arena)
    key = (ref.arena, ref.dim_id, ref.box)
    generation = arena.generation
    hit = _MODEL_GRIDS.get(key)
    if hit is not None and hit[0] == generation:
        return hit[1]
    grid = model_grid(arena, ref.dim_id, ref.box)
    if len(_MODEL_GRIDS) >= _MODEL_GRIDS_MAX:
        _MODEL_GRIDS.pop(next(iter(_MODEL_GRIDS)))
    _MODEL_GRIDS[key] = (generation, grid)
    return grid


def solve_path(job: PathJob, budget_s: float) -> dict[str, Any]:
    """Decode the world (or read the model's box) and search; `budget_s` is the time left."""
    t0 = time.perf_counter()
    if job.model is not None:
        grid = _model_grid(job.model)
    else:
        try:
            grid = _decode(job.world)
        except ProtocolError as exc:
            return {"bad_message": exc.message}
    left = budget_s - (time.perf_counter() - t0)
    result = find_path(grid, job.start, job.goal, job.max_nodes, timeout_s=max(left, 0.0))
    out: dict[str, Any] = {
        "ok": result.ok,
        "path": [list(cell) for cell in result.path],
        "cost": result.cost,
        "expanded": result.expanded,
        "search_ms": round((time.perf_counter() - t0) * 1000, 3),
    }
    if result.error is not None:
        out["error"] = result.error
    return out


def plan_mining(msg: dict[str, Any], budget_s: float) -> dict[str, Any]:
    """Check the deposits and rank them."""
    try:
        req = parse_mining(msg)
    except ProtocolError as exc:
        return {"bad_message": exc.message}
    return {"plan": rank_deposits(req)}


def warm_up() -> None:
    """Run once in every new worker: load (or compile) the search kernel before taking tasks.

    Both kinds of world: a list of cells decodes to a bytearray, a bitset (and the shared
    world model) to read-only bytes, and numba compiles one specialisation per kind. Warmed
    with one only, the first request of the other waited for a compile (a second or more on
    a fresh install)."""
    listed = {"solid": [[0, 0, 0], [1, 0, 0]]}
    find_path(decode_world(listed), (0, 1, 0), (1, 1, 0))
    bitset = {"origin": [0, 0, 0], "size": [2, 1, 1], "solid": "Aw=="}  # both cells solid
    find_path(decode_world(bitset), (0, 1, 0), (1, 1, 0))


# -- gateway side --------------------------------------------------------------------------------


def _failure(kind: str, ref: Any, error: str, message: str, ms: float) -> dict[str, Any]:
    return job_result(kind, ref, ok=False, error=error, message=message, ms=round(ms, 3))


async def _submit(
    pool: WorkerPool,
    fn: Any,
    arg: Any,
    timeout_s: float,
    owner: str | None,
    kind: str,
    ref: Any,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(answer from the worker, None) or (None, the failure answer). Busy/closed raise."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        out = await pool.submit(fn, arg, timeout_s=timeout_s, owner=owner)
    except PoolBusy as exc:
        raise ProtocolError(ErrorCode.BUSY, str(exc), ref) from None
    except OwnerBusy as exc:
        raise ProtocolError(ErrorCode.RATE_LIMITED, str(exc), ref) from None
    except PoolClosed as exc:
        raise ProtocolError(ErrorCode.UNAVAILABLE, str(exc), ref) from None
    except TaskTimeout as exc:
        return None, _failure(kind, ref, "timeout", str(exc), (loop.time() - t0) * 1000)
    except WorkerCrashed as exc:
        return None, _failure(kind, ref, "worker_crashed", str(exc), (loop.time() - t0) * 1000)
    except TaskFailed as exc:
        return None, _failure(kind, ref, "internal", str(exc), (loop.time() - t0) * 1000)
    if "bad_message" in out:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, out["bad_message"], ref)
    out["ms"] = round((loop.time() - t0) * 1000, 3)
    return out, None


def _answered(ref: Any, error: str, message: str) -> dict[str, Any]:
    out = _failure("path_result", ref, error, message, 0.0)
    out.update(path=[], cost=0, expanded=0)
    return out


async def run_path(
    pool: WorkerPool,
    msg: dict[str, Any],
    owner: str | None,
    world: WorldModel | None = None,
) -> dict[str, Any]:
    """The `path_result` for a `path` message (or a POST /api/pathfind body).

    Without `world` in the message the search runs on `world`, the shared model (§9): the
    worker gets the arena's name and a box, never the blocks. Raises ``ProtocolError``:
    BAD_MESSAGE for a malformed request, BUSY when the queue is full, UNAVAILABLE while the
    pool is down. Timeouts and crashes come back as ``ok: false``.
    """
    ref = _ref(msg)
    job = parse_path(msg, ref)
    if job.world is None:
        if world is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "no world model on this gateway", ref)
        model = world.path_ref(job.dim, job.start, job.goal)
        if model is None:  # start or goal outside everything reported: nothing to search
            return _answered(ref, "no_path", "start or goal is outside the known world")
        if box_cells(model.box) > MAX_CELLS:
            return _answered(ref, "too_large", f"the search box is over {MAX_CELLS} cells")
        job = dataclasses.replace(job, model=model)
    out, failed = await _submit(
        pool, solve_path, job, job.timeout_ms / 1000, owner, "path_result", ref
    )
    if failed is not None:
        failed.update(path=[], cost=0, expanded=0)
        return failed
    assert out is not None
    return job_result("path_result", ref, **out)


async def run_mining_plan(
    pool: WorkerPool, msg: dict[str, Any], owner: str | None
) -> dict[str, Any]:
    """The `mining_plan_result` ({type, ref, ok, plan}) for a `mining_plan` message."""
    ref = _ref(msg)
    parse_mining(msg, ref, deep=False)  # scalars here; each deposit is checked in the worker
    body = {k: msg.get(k) for k in ("position", "deposits", "values", "top")}
    out, failed = await _submit(
        pool, plan_mining, body, MINING_TIMEOUT_S, owner, "mining_plan_result", ref
    )
    if failed is not None:
        failed["plan"] = []
        return failed
    assert out is not None
    return job_result("mining_plan_result", ref, ok=True, plan=out["plan"], ms=out["ms"])
