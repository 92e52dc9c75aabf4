"""Benchmark of the event history (§11), embedded and on Redis.

  numbering  the cost of giving events their seq: events/s one replica's history numbers and
             hands back (Redis: the Lua script + XREAD round trip; embedded: in memory)
  ingest     events/s a replica sustains end to end: one bot sends events over a real
             WebSocket, measured until the last one is numbered
  recovery   a viewer that missed N events (default 10,000) reconnects with `?since=`: time
             from connect to the last replayed event, and the bytes of the replay (JSON and
             msgpack)

Starts a throwaway Redis (gateway/testing/); the gateway runs in this process on SQLite.
Prints one line per figure (median of --runs runs).

    python scripts/bench_history.py [--events 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgpack
import orjson

from gateway.history import Entry, History, MemoryHistory
from gateway.history.redis import RedisHistory
from gateway.testing.redis_server import RedisServer
from tests.harness import gateway_settings, running_gateway, token


def median(xs: list[float]) -> float:
    return statistics.median(xs)


async def numbering(make: Callable[[], History], n: int) -> float:
    """Events/s: append n events, until the last one comes back numbered."""
    history = make()
    done = asyncio.Event()
    seen = 0

    def on_entry(_entry: Entry) -> None:
        nonlocal seen
        seen += 1
        if seen == n:
            done.set()

    await history.start(on_entry)
    try:
        started = time.perf_counter()
        for i in range(n):
            history.append({"type": "event", "npc": "b", "name": "tick", "data": {"i": i}}, None)
            if i % 500 == 499:
                await asyncio.sleep(0)  # let the appender run, as the event loop would
        await asyncio.wait_for(done.wait(), 120)
        return n / (time.perf_counter() - started)
    finally:
        await history.close()


async def ingest_and_recovery(
    redis_url: str | None, n: int, encoding: str
) -> tuple[float, float, int]:
    """(events/s ingested end to end, seconds to replay n missed events, bytes replayed)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = gateway_settings(
            Path(tmp),
            redis_url=redis_url,
            tick_ms=0,
            history_events=max(n, 10_000),
            rate_per_s=1e9,  # flood control is not what is measured
            rate_burst=10**9,
        )
        async with running_gateway(settings) as gw:
            ring = gw.node.history_ring
            bot = await gw.bot("bench-bot")
            start_seq = ring.last_seq
            started = time.perf_counter()
            for i in range(n):
                await bot.send({"type": "event", "name": "tick", "data": {"i": i, "ore": "iron"}})
            while ring.last_seq < start_seq + n:  # noqa: ASYNC110 - the ring has no event to await
                await asyncio.sleep(0.001)
            ingest_rate = n / (time.perf_counter() - started)
            await bot.close()

            started = time.perf_counter()
            peer = await gw.peer(
                f"/ws/viewer?since={ring.epoch}:{start_seq}",
                token("viewer", "bench"),
                encoding=encoding,
            )
            replay_bytes = 0
            got = 0
            while got < n:
                frame = await asyncio.wait_for(peer.ws.recv(), 60)
                msg = msgpack.unpackb(frame) if encoding == "msgpack" else orjson.loads(frame)
                if msg["type"] == "recovered":
                    assert msg["ok"] and msg["count"] == n, msg
                if msg["type"] == "event":
                    replay_bytes += len(frame)
                    got += 1
            replay_s = time.perf_counter() - started
            await peer.close()
            return ingest_rate, replay_s, replay_bytes


async def runs(times: int, fn: Callable[[], Awaitable[Any]]) -> list[Any]:
    return [await fn() for _ in range(times)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n = args.events
    with RedisServer() as redis:
        url = redis.url

        async def redis_numbering() -> float:
            redis.flushall()
            return await numbering(lambda: RedisHistory(url, max_events=n), n)

        mem = await runs(args.runs, lambda: numbering(MemoryHistory, n))
        red = await runs(args.runs, redis_numbering)
        print(f"numbering  embedded  {median(mem):>10,.0f} events/s")
        print(f"numbering  redis     {median(red):>10,.0f} events/s")
        for backend, backend_url in (("embedded", None), ("redis", url)):
            for encoding in ("json", "msgpack"):

                async def once(u: str | None = backend_url, e: str = encoding) -> Any:
                    if u is not None:
                        redis.flushall()
                    return await ingest_and_recovery(u, n, e)

                results = await runs(args.runs, once)
                rate = median([r[0] for r in results])
                replay = median([r[1] for r in results])
                size = results[0][2]
                print(
                    f"ingest     {backend:<9} {encoding:<7} {rate:>10,.0f} events/s   "
                    f"recovery of {n:,} events: {replay * 1000:,.0f} ms, "
                    f"{size / 1024:,.0f} KiB ({size / n:.0f} B/event)"
                )


if __name__ == "__main__":
    asyncio.run(main())
