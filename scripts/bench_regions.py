"""Region channels (docs/scaling.md): inbound bus bytes per replica as the number of replicas grows.

    python scripts/bench_regions.py                  # 2, 4, 8, 16 replicas, 20 bots each, 15 s
    python scripts/bench_regions.py --replicas 2 4 --seconds 5 --bots 10
    python scripts/bench_regions.py --cluster --replicas 4 --seconds 5   # on a Redis Cluster

N small replicas (one process each, 1 pathfinding worker) share one PostgreSQL and one Redis
(GATEWAY_DATABASE_URL / GATEWAY_REDIS_URL, or throwaway servers). GatewayProcess i holds `--bots`
bots that walk inside region i (a 512x512 block square of the overworld) at `--hz` updates
per second, and one viewer. Two phases on the same running replicas:
- *all*: every viewer has no filter, so every replica hears every region: what one
  all-fleet position channel cost before region channels;
- *regions*: viewer i subscribes to region i only (disjoint regions), so replica i hears its
  own region and nothing else.
Each phase reads `bus.received_bytes` from every replica's /api/performance at its start and
end and prints the mean inbound bytes/s per replica. With `--cluster` Redis is a throwaway
cluster of three masters, and each phase also prints each master's share of the bytes the
masters sent (`total_net_output_bytes` of INFO stats: pub/sub deliveries, most of it, and every
other reply). Figures are printed, never asserted; the machine's load shows in them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from gateway.auth import issue_token
from gateway.bus.cluster import TAG
from gateway.client import BotClient, ViewerClient
from gateway.testing.backends import ClusterBackends
from gateway.testing.gateway_process import GatewayProcess, start_replicas
from gateway.testing.net import free_port
from gateway.testing.redis_cluster import RedisClusterServers
from gateway.testing.redis_server import RedisServer

REGION = 512


async def _received(session: aiohttp.ClientSession, replica: GatewayProcess, tok: str) -> int:
    async with session.get(
        replica.http + "/api/performance", headers={"Authorization": f"Bearer {tok}"}
    ) as resp:
        perf: dict[str, Any] = await resp.json()
    return int(perf["bus"]["received_bytes"])


def _sent_bytes(master: RedisServer) -> int:
    """What `master` has sent to its clients since it started (INFO stats)."""
    for line in master.command("INFO", "stats").decode().splitlines():
        if line.startswith("total_net_output_bytes:"):
            return int(line.split(":", 1)[1])
    raise RuntimeError("no total_net_output_bytes in INFO stats")


def _shares(before: list[int], after: list[int]) -> list[float]:
    sent = [a - b for a, b in zip(after, before, strict=True)]
    return [x / max(1, sum(sent)) for x in sent]


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
    masters: list[RedisServer],
) -> tuple[float, list[float]]:
    """Mean inbound bus bytes/s per replica, and each master's share of the bytes sent."""
    for i, viewer in enumerate(viewers):
        if regions:
            await viewer.subscribe("overworld", [i * REGION, 0, i * REGION + REGION - 1, 511])
        else:
            await viewer.subscribe()
    async with aiohttp.ClientSession() as session:
        await asyncio.sleep(2.0)  # subscriptions settle; the window below measures steady state
        before = [await _received(session, r, tok) for r in replicas]
        sent_before = [_sent_bytes(m) for m in masters]
        started = time.monotonic()
        await asyncio.sleep(seconds)
        after = [await _received(session, r, tok) for r in replicas]
        sent_after = [_sent_bytes(m) for m in masters]
        elapsed = time.monotonic() - started
    inbound = sum(a - b for a, b in zip(after, before, strict=True)) / len(replicas) / elapsed
    return inbound, _shares(sent_before, sent_after)


async def _run_n(
    backends: ClusterBackends, n: int, args: argparse.Namespace, masters: list[RedisServer]
) -> tuple[tuple[float, list[float]], tuple[float, list[float]]]:
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
        every = await _phase(replicas, viewers, False, args.seconds, admin, masters)
        regions = await _phase(replicas, viewers, True, args.seconds, admin, masters)
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
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="a throwaway Redis Cluster of three masters: print each one's share of bytes sent",
    )
    args = parser.parse_args()
    cluster = RedisClusterServers() if args.cluster else None
    env = dict(os.environ)
    if cluster is not None:
        cluster.start()
        env["GATEWAY_REDIS_URL"] = cluster.url
    masters = [] if cluster is None else cluster.nodes
    bus_master = None if cluster is None else cluster.master_of(TAG)
    bus = " (bus)"
    try:
        backends = ClusterBackends.from_env_or_throwaway(env)
        try:
            print(f"{args.bots} bots per replica at {args.hz:g} Hz, {args.seconds:g} s per phase")
            print("replicas | inbound B/s per replica, all-fleet | region channels")
            for n in args.replicas:
                (every, every_shares), (regions, region_shares) = await _run_n(
                    backends, n, args, masters
                )
                print(f"{n:8d} | {every:34,.0f} | {regions:15,.0f}", flush=True)
                if masters:
                    for phase, shares in (("all-fleet", every_shares), ("regions", region_shares)):
                        each = ", ".join(
                            f"{m.port}{bus if m is bus_master else ''}: {x:.0%}"
                            for m, x in zip(masters, shares, strict=True)
                        )
                        print(f"         | masters' share of bytes sent, {phase}: {each}")
        finally:
            backends.close()
    finally:
        if cluster is not None:
            cluster.close()


if __name__ == "__main__":
    asyncio.run(main())
