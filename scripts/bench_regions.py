"""Region channels (docs/scaling.md): inbound bus bytes per replica as the number of replicas grows.

    python scripts/bench_regions.py                  # 2, 4, 8, 16 replicas, 20 bots each, 15 s
    python scripts/bench_regions.py --replicas 2 4 --seconds 5 --bots 10

N small replicas (one process each, 1 pathfinding worker) share one PostgreSQL and one Redis
(GATEWAY_DATABASE_URL / GATEWAY_REDIS_URL, or throwaway servers). GatewayProcess i holds `--bots`
bots that walk inside region i (a 512x512 block square of the overworld) at `--hz` updates
per second, and one viewer. Two phases on the same running replicas:
- *all*: every viewer has no filter, so every replica hears every region: what one
  all-fleet position channel cost before region channels;
- *regions*: viewer i subscribes to region i only (disjoint regions), so replica i hears its
  own region and nothing else.
Each phase reads `bus.received_bytes` from every replica's /api/performance at its start and
end and prints the mean inbound bytes/s per replica. Figures are printed, never asserted; the
machine's load shows in them.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from gateway.auth import issue_token
from gateway.client import BotClient, ViewerClient
from gateway.testing.backends import ClusterBackends
from gateway.testing.gateway_process import GatewayProcess, start_replicas
from gateway.testing.net import free_port

REGION = 512


async def _received(session: aiohttp.ClientSession, replica: GatewayProcess, tok: str) -> int:
    async with session.get(
        replica.http + "/api/performance", headers={"Authorization": f"Bearer {tok}"}
    ) as resp:
        perf: dict[str, Any] = await resp.json()
    return int(perf["bus"]["received_bytes"])


async def _walk(bots: list[tuple[int, BotClient]], hz: float, stop: asyncio.Event) -> None:
    """Every bot moves inside its replica's region, `hz` times a second."""
    step = 0
    while not stop.is_set():
        step += 1
        for i, (region, bot) in enumerate(bots):
            x = region * REGION + 10 + (step + i) % 400
            await bot.send_position(x, 64, 10 + i % 400, dim="overworld")
        await asyncio.sleep(1 / hz)


async def _phase(
    replicas: list[GatewayProcess],
    viewers: list[ViewerClient],
    regions: bool,
    seconds: float,
    tok: str,
) -> float:
    for i, viewer in enumerate(viewers):
        if regions:
            await viewer.subscribe("overworld", [i * REGION, 0, i * REGION + REGION - 1, 511])
        else:
            await viewer.subscribe()
    async with aiohttp.ClientSession() as session:
        await asyncio.sleep(2.0)  # subscriptions settle; the window below measures steady state
        before = [await _received(session, r, tok) for r in replicas]
        started = time.monotonic()
        await asyncio.sleep(seconds)
        after = [await _received(session, r, tok) for r in replicas]
        elapsed = time.monotonic() - started
    return sum(a - b for a, b in zip(after, before, strict=True)) / len(replicas) / elapsed


async def _run_n(
    backends: ClusterBackends, n: int, args: argparse.Namespace
) -> tuple[float, float]:
    secret = secrets.token_hex(32)
    work = Path(tempfile.mkdtemp(prefix="aicraft-bench-regions-"))
    replicas = start_replicas(
        [free_port() for _ in range(n)],
        secret=secret,
        database_url=backends.database_url,
        redis_url=backends.redis_url,
        work_dir=work,
        tick_ms=100,
        names=[f"reg{n}-{i}" for i in range(n)],
        extra_env={"GATEWAY_WORKERS": "1"},
    )
    admin = issue_token(secret, "admin", "bench", 3600)
    bots: list[tuple[int, BotClient]] = []
    viewers: list[ViewerClient] = []
    stop = asyncio.Event()
    try:
        for i, r in enumerate(replicas):
            for b in range(args.bots):
                bot = BotClient(r.ws, issue_token(secret, "npc", f"r{n}-{i}-{b}", 3600))
                await bot.start()
                bots.append((i, bot))
            viewer = ViewerClient(r.ws, issue_token(secret, "viewer", f"v{i}", 3600))
            await viewer.start()
            viewers.append(viewer)
        walking = asyncio.create_task(_walk(bots, args.hz, stop))
        every = await _phase(replicas, viewers, False, args.seconds, admin)
        regions = await _phase(replicas, viewers, True, args.seconds, admin)
        stop.set()
        await walking
        return every, regions
    finally:
        stop.set()
        await asyncio.gather(*(v.close() for v in viewers), *(b.close() for _, b in bots))
        for r in replicas:
            if r.alive and r.proc is not None:
                r.proc.terminate()
        for r in replicas:
            r.terminate()
        shutil.rmtree(work, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--bots", type=int, default=20, help="bots per replica")
    parser.add_argument("--hz", type=float, default=5.0, help="updates per bot per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    args = parser.parse_args()
    backends = ClusterBackends.from_env_or_throwaway()
    try:
        print(f"{args.bots} bots per replica at {args.hz:g} Hz, {args.seconds:g} s per phase")
        print("replicas | inbound B/s per replica, all-fleet | region channels")
        for n in args.replicas:
            every, regions = await _run_n(backends, n, args)
            print(f"{n:8d} | {every:34,.0f} | {regions:15,.0f}", flush=True)
    finally:
        backends.close()


if __name__ == "__main__":
    asyncio.run(main())
