"""Pathfinding benchmark: paths/s against networkx, and event-loop lag while the pool is full.

    .venv/bin/python scripts/bench_path.py [--pairs 1000] [--workers N] [--seed 1]

On one generated 128x64x128 terrain (hills from summed sines, caves carved by random worms) and
the same random standing start/goal pairs for every contender, it prints:

1. search core, one process: networkx ``astar_path`` on the same graph with the same heuristic
   (the baseline), our compiled (numba) search and our pure-Python search;
2. end to end through the worker pool with 1 worker and with N (``run_path``, each request
   carrying the whole world as a base64 bitset, as a bot would send it), with the p99 lateness
   of a coroutine ticking every 5 ms on the gateway's loop meanwhile;
3. the same with the world by reference: the terrain loaded once into the shared world model
   (§9) and requests without a world, with the bytes each request moves to a worker.

Figures only; nothing is asserted. Needs networkx (a benchmark-only package).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import pickle
import random
import time
from typing import Any

from gateway.workers import WorkerPool, run_path
from gateway.workers.astar import find_path, jit_available
from gateway.workers.tasks import parse_path, solve_path
from gateway.workers.world import PAD_ABOVE, PAD_BELOW, Grid
from gateway.world.model import WorldModel
from gateway.world.sections import pack, parse_chunk

SX, SY, SZ = 128, 64, 128
Cell = tuple[int, int, int]


def make_terrain(seed: int) -> tuple[bytearray, Grid]:
    """Bitset-order solid bytes (0/1 per cell) and the grid built from them."""
    rnd = random.Random(seed)
    waves = [
        (rnd.uniform(0.02, 0.12), rnd.uniform(0.02, 0.12), rnd.uniform(0, 6.3), rnd.uniform(2, 7))
        for _ in range(5)
    ]
    solid = bytearray(SX * SY * SZ)
    for z in range(SZ):
        for x in range(SX):
            height = 28 + sum(a * math.sin(fx * x + fz * z + p) for fx, fz, p, a in waves)
            height = int(max(2, min(SY - 4, height + rnd.random())))
            for y in range(height):
                solid[(y * SZ + z) * SX + x] = 1
    for _ in range(40):  # caves: worms of spheres below the surface
        cx, cy, cz = rnd.uniform(0, SX), rnd.uniform(6, 30), rnd.uniform(0, SZ)
        for _ in range(30):
            r = rnd.uniform(1.5, 3.5)
            for y in range(max(1, int(cy - r)), min(SY, int(cy + r) + 1)):
                for z in range(max(0, int(cz - r)), min(SZ, int(cz + r) + 1)):
                    for x in range(max(0, int(cx - r)), min(SX, int(cx + r) + 1)):
                        if (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= r * r:
                            solid[(y * SZ + z) * SX + x] = 0
            cx += rnd.uniform(-2, 2)
            cy += rnd.uniform(-1, 1)
            cz += rnd.uniform(-2, 2)
    layer = SX * SZ
    padded = bytes(PAD_BELOW * layer) + bytes(solid) + bytes(PAD_ABOVE * layer)
    return solid, Grid(0, 0, 0, SX, SY, SZ, padded)


def bitset(solid: bytearray) -> str:
    import base64

    out = bytearray((len(solid) + 7) // 8)
    for i, b in enumerate(solid):
        if b:
            out[i >> 3] |= 1 << (i & 7)
    return base64.b64encode(bytes(out)).decode()


def standing_cells(grid: Grid) -> list[Cell]:
    return [
        (x, y, z)
        for z in range(SZ)
        for x in range(SX)
        for y in range(1, SY + 1)
        if grid.standing(x, y, z)
    ]


def nx_graph(grid: Grid, stands: list[Cell]) -> Any:
    """The same movement graph for networkx (directed: drops are one-way)."""
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(stands)
    on = set(stands)
    for x, y, z in stands:
        for nx_, nz in ((x + 1, z), (x - 1, z), (x, z + 1), (x, z - 1)):
            if (nx_, y, nz) in on:
                graph.add_edge((x, y, z), (nx_, y, nz), weight=1)
            elif (nx_, y + 1, nz) in on and not grid.is_solid(x, y + 2, z):
                graph.add_edge((x, y, z), (nx_, y + 1, nz), weight=2)
            elif not grid.is_solid(nx_, y, nz) and not grid.is_solid(nx_, y + 1, nz):
                for d in (1, 2, 3):
                    if grid.is_solid(nx_, y - d, nz):
                        break
                    if (nx_, y - d, nz) in on:
                        graph.add_edge((x, y, z), (nx_, y - d, nz), weight=1 + d)
                        break
    return graph


def heuristic(a: Cell, b: Cell) -> int:
    hd = abs(a[0] - b[0]) + abs(a[2] - b[2])
    rise = b[1] - a[1]
    vm = rise if rise >= 0 else (-rise + 2) // 3
    return max(hd, vm) + abs(rise)


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.1f} paths/s"


def bench_core(grid: Grid, stands: list[Cell], pairs: list[tuple[Cell, Cell]]) -> None:
    import networkx as nx

    graph = nx_graph(grid, stands)
    print(f"graph: {graph.number_of_nodes()} standing cells, {graph.number_of_edges()} moves")
    t0 = time.perf_counter()
    nx_costs = []
    for s, t in pairs:
        try:
            nx_costs.append(nx.astar_path_length(graph, s, t, heuristic, weight="weight"))
        except nx.NetworkXNoPath:
            nx_costs.append(None)
    nx_s = time.perf_counter() - t0
    found = sum(c is not None for c in nx_costs)
    print(f"pairs: {len(pairs)} ({found} connected, {len(pairs) - found} without a path)")
    print(f"networkx astar_path       {rate(len(pairs), nx_s)}  (baseline)")
    backends = ["jit", "python"] if jit_available() else ["python"]
    for backend in backends:
        if backend == "jit":
            find_path(grid, *pairs[0], backend="jit")  # compile / load the kernel first
        subset = pairs if backend == "jit" else pairs[: max(1, len(pairs) // 4)]
        t0 = time.perf_counter()
        expanded = 0
        for (s, t), want in zip(subset, nx_costs, strict=False):
            r = find_path(grid, s, t, backend=backend)
            expanded += r.expanded
            assert (r.cost if r.ok else None) == want, (s, t, r, want)
        took = time.perf_counter() - t0
        ratio = (len(subset) / took) / (len(pairs) / nx_s)
        print(
            f"ours ({backend:6}) 1 process  {rate(len(subset), took)}  {ratio:5.1f}x networkx"
            f"  ({expanded / len(subset):.0f} expansions/path, same costs)"
        )


def load_model(solid: bytearray) -> WorldModel:
    """The terrain as reported sections: 16x16x16 cubes cut out of the bitset-order bytes."""
    import numpy as np

    model = WorldModel(SX * SY * SZ // 4096 + 1)
    cells = np.frombuffer(bytes(solid), np.uint8).reshape(SY, SZ, SX)
    for y0 in range(0, SY, 16):
        for z0 in range(0, SZ, 16):
            for x0 in range(0, SX, 16):
                cube = cells[y0 : y0 + 16, z0 : z0 + 16, x0 : x0 + 16]
                msg = {"origin": [x0, y0, z0], "solid": pack(cube)}
                model.accept_chunk(parse_chunk(msg))
    model.cut()
    return model


def request_bytes(world: dict[str, Any] | None, model: WorldModel | None, pair: Any) -> int:
    """Bytes the loop sends a worker for one request (the pickled task), either way."""
    s, t = pair
    msg: dict[str, Any] = {"start": list(s), "goal": list(t)}
    if world is not None:
        msg["world"] = world
    job = parse_path(msg)
    if model is not None:
        import dataclasses

        job = dataclasses.replace(job, model=model.path_ref("overworld", s, t))
    return len(pickle.dumps((1, solve_path, job, 5.0)))


async def bench_pool(
    workers: int,
    world: dict[str, Any] | None,
    pairs: list[tuple[Cell, Cell]],
    model: WorldModel | None = None,
) -> tuple[float, float, float]:
    """(paths/s, lag p99 ms, lag max ms) through the pool with `workers` processes; `world`
    None means requests without a world, searched on `model`."""
    extra = {"world": world} if world is not None else {}
    pool = WorkerPool(workers, queue_max=len(pairs))
    await pool.start()
    try:
        # One request per worker first, so the decoded-world cache is warm in each. All requests
        # go in at once: the timeout covers queueing, so it is raised from the 5 s default.
        await asyncio.gather(
            *(
                run_path(
                    pool,
                    {"start": list(s), "goal": list(t), **extra, "timeout_ms": 60_000},
                    None,
                    model,
                )
                for s, t in pairs[:workers]
            )
        )
        loop = asyncio.get_running_loop()
        lags: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                t = loop.time()
                await asyncio.sleep(0.005)
                lags.append(loop.time() - t - 0.005)

        tick = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(
                run_path(
                    pool,
                    {"start": list(s), "goal": list(t), **extra, "timeout_ms": 60_000},
                    "bench",
                    model,
                )
                for s, t in pairs
            )
        )
        took = time.perf_counter() - t0
        done.set()
        await tick
        errors = [r["error"] for r in results if not r["ok"] and r["error"] != "no_path"]
        if errors:
            print(f"  {len(errors)} requests failed: {sorted(set(errors))}")
        lags.sort()
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000
        return len(pairs) / took, p99, lags[-1] * 1000
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    t0 = time.perf_counter()
    solid, grid = make_terrain(args.seed)
    stands = standing_cells(grid)
    rnd = random.Random(args.seed + 1)
    pairs = [(rnd.choice(stands), rnd.choice(stands)) for _ in range(args.pairs)]
    print(
        f"terrain {SX}x{SY}x{SZ}, built in {time.perf_counter() - t0:.1f} s; cpus {os.cpu_count()}"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    bench_core(grid, stands, pairs)
    world = {"origin": [0, 0, 0], "size": [SX, SY, SZ], "solid": bitset(solid)}
    print(f"world on the wire: {len(world['solid']) / 1024:.0f} KiB base64 per request")
    model = load_model(solid)
    print(
        f"bytes to a worker per request: {request_bytes(world, None, pairs[0]):,} with the world,"
        f" {request_bytes(None, model, pairs[0]):,} by reference"
    )
    for n in sorted({1, args.workers}):
        for label, w, m in (
            ("world per request", world, None),
            ("world by reference", None, model),
        ):
            per_s, p99, worst = asyncio.run(bench_pool(n, w, pairs, m))
            print(
                f"pool, {n} worker(s), {label:18}, end to end {per_s:8.1f} paths/s;"
                f" loop lag p99 {p99:.2f} ms (max {worst:.2f} ms)"
            )
    model.close()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
