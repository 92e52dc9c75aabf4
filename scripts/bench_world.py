"""World model benchmark (§9): section ingest rate, and cross-replica visibility time.

    .venv/bin/python scripts/bench_world.py [--bots 1000] [--sections 20] [--trials 30]

1. ingest: one `python -m gateway serve` (SQLite), `--bots` real WebSocket bots (msgpack) each
   sending `--sections` distinct `chunk` messages as fast as the socket takes them (flood
   control raised for the run); prints the sections/s the replica absorbed (accepted into the
   model, from its `/api/performance` `world.sectionsReceived`) and how long until the last
   tick's batch was in the database (`batchProcessor.sections.itemsWritten`).
2. visibility: two replicas joined by a throwaway Redis; a bot on A reports a new section, B's
   `GET /api/world/overworld` is polled every 2 ms until it counts it: p50 / p99 / max of the
   time from A taking it to B holding it (the contract allows 1 s).

The client runs on the same machine as the gateway: on a small box the figures include the
load generator's own CPU. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
from websockets.asyncio.client import connect

from gateway.auth import issue_token
from gateway.testing.gateway_process import GatewayProcess
from gateway.testing.redis_server import RedisServer

SECRET = secrets.token_urlsafe(48)


async def poll(check: Any, interval: float) -> None:
    """Until `await check()` is true: the state is another process's, read over HTTP."""
    while not await check():  # noqa: ASYNC110 - nothing in this process to await instead
        await asyncio.sleep(interval)


def section(seed: int) -> bytes:
    return bytes((seed * 31 + i) & 0xFF for i in range(512))


async def perf(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    tok = issue_token(SECRET, "admin", "bench", 3600)
    async with http.get(f"{base}/api/performance", headers={"Authorization": f"Bearer {tok}"}) as r:
        return dict(await r.json())


async def bench_ingest(bots: int, per_bot: int, tmp: Path) -> None:
    env = {
        "GATEWAY_SECRET": SECRET,
        "GATEWAY_DATA_DIR": str(tmp / "ingest"),
        "GATEWAY_WORKERS": "1",
        "GATEWAY_RATE_PER_S": "100000",
        "GATEWAY_RATE_BURST": "100000",
    }
    gw = GatewayProcess(env)
    gw.start()
    try:
        socks = []
        for i in range(bots):
            tok = issue_token(SECRET, "npc", f"w{i:05d}", 3600)
            socks.append(
                await connect(
                    gw.ws + "/ws/npc",
                    additional_headers={"Authorization": f"Bearer {tok}"},
                    subprotocols=["aicraft.v1.msgpack"],  # type: ignore[list-item]
                    max_size=None,
                )
            )
        for ws in socks:
            await ws.recv()  # welcome
        frames = [
            [
                msgpack.packb(
                    {"type": "chunk", "origin": [i * 16, 64, j * 16], "solid": section(i + j)}
                )
                for j in range(per_bot)
            ]
            for i in range(bots)
        ]

        async def stream(ws: Any, mine: list[bytes]) -> None:
            for frame in mine:
                await ws.send(frame)

        total = bots * per_bot
        async with aiohttp.ClientSession() as http:
            before = (await perf(http, gw.http))["world"]["sectionsReceived"]
            t0 = time.perf_counter()
            await asyncio.gather(*(stream(ws, f) for ws, f in zip(socks, frames, strict=True)))
            sent = time.perf_counter() - t0

            async def absorbed() -> bool:
                return bool(
                    (await perf(http, gw.http))["world"]["sectionsReceived"] - before >= total
                )

            async def written_all() -> bool:
                figures = await perf(http, gw.http)
                return bool(figures["batchProcessor"]["sections"]["itemsWritten"] >= total)

            await poll(absorbed, 0.01)
            taken = time.perf_counter() - t0
            await poll(written_all, 0.05)
            written = time.perf_counter() - t0
        print(
            f"ingest: {bots} bots x {per_bot} sections = {total:,} sections "
            f"({total * 512 / 1e6:.1f} MB of bitsets)\n"
            f"  sent by the client in {sent:.2f} s; absorbed by the replica in {taken:.2f} s = "
            f"{total / taken:,.0f} sections/s; all in the database after {written:.2f} s"
        )
        for ws in socks:
            await ws.close()
    finally:
        gw.terminate()


async def bench_visibility(trials: int, tmp: Path) -> None:
    redis = RedisServer()
    redis.start()
    replicas = []
    try:
        for name in ("a", "b"):
            env = {
                "GATEWAY_SECRET": SECRET,
                "GATEWAY_DATA_DIR": str(tmp / name),
                "GATEWAY_REDIS_URL": redis.url,
                "GATEWAY_REPLICA_ID": name,
                "GATEWAY_WORKERS": "1",
            }
            gw = GatewayProcess(env)
            gw.start()
            replicas.append(gw)
        a, b = replicas
        tok = issue_token(SECRET, "npc", "scout", 3600)
        ws = await connect(
            a.ws + "/ws/npc",
            additional_headers={"Authorization": f"Bearer {tok}"},
            subprotocols=["aicraft.v1.msgpack"],  # type: ignore[list-item]
        )
        await ws.recv()
        view = issue_token(SECRET, "viewer", "bench", 3600)
        headers = {"Authorization": f"Bearer {view}"}
        times = []
        async with aiohttp.ClientSession() as http:

            async def count() -> int:
                async with http.get(f"{b.http}/api/world/overworld", headers=headers) as r:
                    return int((await r.json())["sections"])

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # wait until the replicas hear each other
                await ws.send(
                    msgpack.packb({"type": "chunk", "origin": [0, 0, 0], "solid": section(0)})
                )
                await asyncio.sleep(0.2)
                if await count() >= 1:
                    break
            for i in range(1, trials + 1):
                known = await count()
                await ws.send(
                    msgpack.packb({"type": "chunk", "origin": [i * 16, 0, 0], "solid": section(i)})
                )
                t0 = time.perf_counter()

                async def seen(known: int = known) -> bool:
                    return await count() > known

                await poll(seen, 0.002)
                times.append(time.perf_counter() - t0)
        await ws.close()
        times.sort()
        p = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000  # noqa: E731
        print(
            f"cross-replica visibility ({trials} sections, tick 500 ms): p50 {p(0.5):.0f} ms, "
            f"p99 {p(0.99):.0f} ms, max {times[-1] * 1000:.0f} ms (contract: 1,000 ms)"
        )
    finally:
        for gw in replicas:
            gw.terminate()
        redis.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=1000)
    parser.add_argument("--sections", type=int, default=20)
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}, load average before {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-world-") as tmp:
        asyncio.run(bench_ingest(args.bots, args.sections, Path(tmp)))
        asyncio.run(bench_visibility(args.trials, Path(tmp)))
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
