"""Cluster benchmark: 3 replicas on one PostgreSQL and one Redis, the single-replica load.

    python scripts/bench_cluster.py             # 1000 bots x 10 Hz + 200 viewers, 60 s
    python scripts/bench_cluster.py --quick     # 300 bots x 10 Hz + 30 viewers, 20 s

Bots are spread evenly over the replicas (bots of replica i are named `c{i}-NNNNN`), and so are
the viewers. Every viewer sees every bot, so each viewer measures two latencies at once:
*same* (bots on its own replica: bot -> replica -> viewer) and *cross* (bots on the other
replicas: bot -> replica -> Redis -> this replica -> viewer). The difference is what Redis adds.

The bots are scripts/loadgen.py's own workers (`loadgen.worker_main`, one process per replica,
all sharing one start instant, so `x` = send time in ms since it, as in loadgen). The viewers are
this script's (one process), timing every sampled update on receipt (one clock: one machine).

Redis traffic, two sources, both over the sending window only:
- `/api/performance` -> `bus.published` delta per replica (messages this replica's bus sent to
  Redis: position windows, events, joined/left, commands), divided by the ticks in the window;
- Redis's own `INFO commandstats` -> `cmdstat_publish.calls` delta (every PUBLISH, all replicas),
  divided by ticks and replicas. The two should agree.

PostgreSQL and Redis come from GATEWAY_DATABASE_URL / GATEWAY_REDIS_URL, or are throwaway
servers (gateway/testing/). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import loadgen  # (scripts/loadgen.py: bot workers, latency histogram)

from gateway.auth import issue_token
from gateway.testing.backends import ClusterBackends
from gateway.testing.gateway_process import start_replicas
from gateway.testing.net import free_port

LAT_SAMPLES_PER_CLASS = 64  # per frame: bounded work per frame for the viewer process


# -- the viewer process ---------------------------------------------------------------------------
def viewer_main(
    targets: list[tuple[str, str, list[str]]],
    encoding: str,
    t0: float,
    duration: float,
    grace: float,
    out: Any,
    go: Any,
    go_at: Any,
) -> None:
    """Viewers (of one or more replicas); latency per class (same replica as the bot, or not).

    Histograms go back raw, so the coordinator can merge the viewer processes' figures."""
    loadgen._install_loop()

    async def main() -> dict[str, Any]:
        from websockets.asyncio.client import connect
        from websockets.typing import Subprotocol

        loads = loadgen.decoder(encoding)
        proto = loadgen.MSGPACK_PROTO if encoding == "msgpack" else loadgen.JSON_PROTO
        # same/cross: bot send -> viewer receipt; cut_same/cut_cross: the frame's `ts` (the cut
        # on the bot's replica) -> viewer receipt, which leaves out the coalescing wait.
        hists: dict[str, dict[int, int]] = {
            n: {} for n in ("same", "cross", "cut_same", "cut_cross")
        }
        counts = {"frames": 0, "same_updates": 0, "cross_updates": 0, "out_of_order": 0}
        window = [0.0, 0.0]
        sem = asyncio.Semaphore(32)
        conns: list[Any] = []

        async def reader(ws: Any, prefix: str) -> None:
            seen: dict[str, int] = {}
            with contextlib.suppress(Exception):
                while True:
                    data = await ws.recv(decode=False)
                    now_ms = (time.time() - t0) * 1000
                    msg = loads(data)
                    if msg.get("type") != "positions":
                        continue
                    start_ms, end_ms = window
                    if not start_ms <= now_ms <= end_ms + grace * 1000:
                        continue
                    counts["frames"] += 1
                    updates = msg["updates"]
                    if updates:
                        local = updates[0]["id"].startswith(prefix)  # a frame has one source
                        cut = "cut_same" if local else "cut_cross"
                        loadgen.hist_add(hists[cut], now_ms - (msg["ts"] / 1000 - t0) * 1000)
                    same: list[float] = []
                    cross: list[float] = []
                    for u in updates:
                        npc, seq, x = u["id"], u["z"], u["x"]
                        prev = seen.get(npc)
                        seen[npc] = seq
                        if prev is not None and 0 <= seq < prev:
                            counts["out_of_order"] += 1
                        if seq >= 0 and start_ms <= x <= end_ms:
                            (same if npc.startswith(prefix) else cross).append(now_ms - x)
                    counts["same_updates"] += len(same)
                    counts["cross_updates"] += len(cross)
                    for name, lat in (("same", same), ("cross", cross)):
                        step = max(1, len(lat) // LAT_SAMPLES_PER_CLASS)
                        for value in lat[::step]:
                            loadgen.hist_add(hists[name], value)

        async def open_one(url: str, tok: str, prefix: str) -> None:
            async with sem:
                ws = await connect(
                    url + "/ws/viewer",
                    additional_headers={"Authorization": f"Bearer {tok}"},
                    subprotocols=[Subprotocol(proto)],
                    compression=None,
                    proxy=None,
                    open_timeout=30,
                    ping_interval=None,
                    max_size=None,
                    max_queue=None,
                )
            conns.append(ws)
            tasks.append(asyncio.create_task(reader(ws, prefix)))

        tasks: list[asyncio.Task[None]] = []
        await asyncio.gather(
            *(open_one(url, tok, prefix) for prefix, url, toks in targets for tok in toks)
        )
        out.put(("ready", -1, None))
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        window[:] = [(go_at.value - t0) * 1000, (go_at.value + duration - t0) * 1000]
        await asyncio.sleep(max(0.0, go_at.value + duration + grace - time.time()))
        for ws in conns:
            ws.transport.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return {"viewers": len(conns), **counts, "hists": hists}

    try:
        out.put(("viewers", -1, asyncio.run(main())))
    except Exception as exc:
        out.put(("failed", -1, repr(exc)))


# -- figures from the servers ---------------------------------------------------------------------
async def bus_published(bases: list[str], admin: str) -> list[int | None]:
    import aiohttp

    out: list[int | None] = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as http:
        for base in bases:
            try:
                async with http.get(base + "/api/performance", timeout=15) as resp:
                    out.append(int((await resp.json())["bus"]["published"]))
            except Exception as exc:
                print(f"bench_cluster: {base}/api/performance: {exc!r}", file=sys.stderr)
                out.append(None)
    return out


async def redis_publish_calls(url: str) -> int:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get("cmdstat_publish", {}).get("calls", 0))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the run --------------------------------------------------------------------------------------
def receive(out: Any, timeout: float) -> tuple[str, int, Any]:
    try:
        item: tuple[str, int, Any] = out.get(timeout=timeout)
    except Exception:
        raise SystemExit(
            f"bench_cluster: no word from the load processes in {timeout:.0f} s"
        ) from None
    return item


def run(args: argparse.Namespace) -> dict[str, Any]:
    secret = secrets.token_urlsafe(32)
    admin = issue_token(secret, "admin", "bench", 3600)
    work = Path(tempfile.mkdtemp(prefix="aicraft-bench-cluster-"))
    backends = ClusterBackends.from_env_or_throwaway()
    replicas = []
    procs: list[Any] = []
    try:
        replicas = start_replicas(
            [free_port() for _ in range(args.replicas)],
            secret=secret,
            database_url=backends.database_url,
            redis_url=backends.redis_url,
            work_dir=work,
            tick_ms=args.tick_ms,
            extra_env={"GATEWAY_LOG_LEVEL": "WARNING"},
        )
        n = len(replicas)
        prefixes = [f"c{i}-" for i in range(n)]
        t0 = time.time()
        grace = max(2.0, 2 * args.tick_ms / 1000 + 1.0)
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        go = ctx.Event()
        go_at = ctx.Value("d", 0.0)
        for i, replica in enumerate(replicas):
            count = args.bots // n + (1 if i < args.bots % n else 0)
            ids = [f"{prefixes[i]}{k:05d}" for k in range(count)]
            bots = [(npc, issue_token(secret, "npc", npc, 14400)) for npc in ids]
            cfg = loadgen.Config(replica.ws, args.encoding, args.hz, args.duration, grace, t0)
            procs.append(
                ctx.Process(
                    target=loadgen.worker_main,
                    args=(i, cfg, bots, [], out, go, go_at),
                    daemon=True,
                )
            )
        viewer_procs = []
        for i, replica in enumerate(replicas):  # one viewer process per replica
            count = args.viewers // n + (1 if i < args.viewers % n else 0)
            toks = [issue_token(secret, "viewer", f"v{i}-{k}", 14400) for k in range(count)]
            targets = [(prefixes[i], replica.ws, toks)]
            viewer_procs.append(
                ctx.Process(
                    target=viewer_main,
                    args=(targets, args.encoding, t0, args.duration, grace, out, go, go_at),
                    daemon=True,
                )
            )
        bot_procs = procs[:]
        procs.extend(viewer_procs)
        # Viewers first, so they are in place when the bots join.
        for group in (viewer_procs, bot_procs):
            for proc in group:
                proc.start()
            for _ in group:
                kind, index, payload = receive(out, 180)
                if kind != "ready":
                    raise SystemExit(f"load process {index} {kind}: {payload}")
        time.sleep(2.0)  # settle after the connection storm (joins, snapshots) before measuring
        bases = [r.http for r in replicas]
        pub0 = asyncio.run(bus_published(bases, admin))
        redis0 = asyncio.run(redis_publish_calls(backends.redis_url))
        cpu0 = [cpu_seconds(r.proc.pid) for r in replicas if r.proc]
        go_at.value = time.time() + 0.2
        go.set()
        time.sleep(max(0.0, go_at.value + args.duration - time.time()))
        pub1 = asyncio.run(bus_published(bases, admin))
        redis1 = asyncio.run(redis_publish_calls(backends.redis_url))
        cpu1 = [cpu_seconds(r.proc.pid) for r in replicas if r.proc]
        results: dict[str, Any] = {"bots": [], "viewers": []}
        while len(results["bots"]) < n or len(results["viewers"]) < n:
            kind, index, payload = receive(out, grace + 90)
            if kind == "result":
                results["bots"].append(payload)
            elif kind == "viewers":
                results["viewers"].append(payload)
            else:
                raise SystemExit(f"load process {index} {kind}: {payload}")
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
        for replica in replicas:
            replica.terminate()
        backends.close()
        if args.keep:
            print(f"bench_cluster: logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    ticks = args.duration / (args.tick_ms / 1000) if args.tick_ms else None
    v = merge_viewers(results["viewers"])
    sent = sum(b["sent"] for b in results["bots"])
    per_replica = [
        None if a is None or b is None else b - a for a, b in zip(pub0, pub1, strict=True)
    ]
    return {
        "replicas": n,
        "bots": args.bots,
        "hz": args.hz,
        "viewers": args.viewers,
        "duration_s": args.duration,
        "tick_ms": args.tick_ms,
        "encoding": args.encoding,
        "bots_connected": sum(b["bots_connected"] for b in results["bots"]),
        "viewers_connected": v["viewers"],
        "connect_failures": sum(b["connect_failures"] for b in results["bots"]),
        "updates_sent_per_s": round(sent / args.duration, 1),
        "latency_same_replica_ms": v["same"],
        "latency_cross_replica_ms": v["cross"],
        "added_by_redis_ms": added(v["same"], v["cross"]),
        "cut_to_viewer_same_replica_ms": v["cut_same"],
        "cut_to_viewer_cross_replica_ms": v["cut_cross"],
        "cut_to_viewer_added_by_redis_ms": added(v["cut_same"], v["cut_cross"]),
        "out_of_order": v["out_of_order"],
        "bus_published_per_replica": per_replica,
        "bus_published_per_replica_per_tick": [
            None if d is None or not ticks else round(d / ticks, 3) for d in per_replica
        ],
        "redis_publish_calls": redis1 - redis0,
        "redis_publish_per_replica_per_tick": round((redis1 - redis0) / ticks / n, 3)
        if ticks
        else None,
        "replica_cpu_percent": [
            round(100 * (b - a) / args.duration, 1) for a, b in zip(cpu0, cpu1, strict=True)
        ],
    }


def merge_viewers(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"viewers": 0, "frames": 0, "out_of_order": 0}
    hists: dict[str, dict[int, int]] = {}
    for part in parts:
        for key in merged:
            merged[key] += part[key]
        for name, hist in part["hists"].items():
            into = hists.setdefault(name, {})
            for b, c in hist.items():
                into[int(b)] = into.get(int(b), 0) + c
    for name, hist in hists.items():
        merged[name] = loadgen.hist_percentiles(hist)
    return merged


def added(same: dict[str, Any], cross: dict[str, Any]) -> dict[str, float | None]:
    return {
        q: None if same[q] is None or cross[q] is None else round(cross[q] - same[q], 2)
        for q in ("p50", "p95", "p99")
    }


def markdown(r: dict[str, Any]) -> str:
    same, cross, extra = (
        r["latency_same_replica_ms"],
        r["latency_cross_replica_ms"],
        r["added_by_redis_ms"],
    )
    cs, cc, ca = (
        r["cut_to_viewer_same_replica_ms"],
        r["cut_to_viewer_cross_replica_ms"],
        r["cut_to_viewer_added_by_redis_ms"],
    )
    lines = [
        f"{r['replicas']} replicas, {r['bots']:,} bots x {r['hz']:g} Hz + {r['viewers']} viewers, "
        f"{r['duration_s']:g} s, tick {r['tick_ms']} ms, {r['encoding'].upper()}, loopback, "
        f"{os.cpu_count()} cores shared by everything (replicas, PostgreSQL, Redis, load)",
        "",
        "| viewer vs bot | samples | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|",
        f"| same replica | {same['samples']:,} | {same['p50']} | {same['p95']} | {same['p99']} |",
        f"| other replica (via Redis) | {cross['samples']:,} | {cross['p50']} | {cross['p95']} "
        f"| {cross['p99']} |",
        f"| added by Redis | | {extra['p50']} | {extra['p95']} | {extra['p99']} |",
        f"| tick cut -> viewer, same replica | {cs['samples']:,} | {cs['p50']} | {cs['p95']} "
        f"| {cs['p99']} |",
        f"| tick cut -> viewer, other replica | {cc['samples']:,} | {cc['p50']} | {cc['p95']} "
        f"| {cc['p99']} |",
        f"| added by Redis (cut -> viewer) | | {ca['p50']} | {ca['p95']} | {ca['p99']} |",
        "",
        f"Redis messages per replica per tick: {r['bus_published_per_replica_per_tick']} "
        f"(`/api/performance` bus.published deltas); "
        f"{r['redis_publish_per_replica_per_tick']} (Redis `INFO commandstats` "
        f"cmdstat_publish.calls delta / ticks / replicas).",
        f"Updates sent/s: {r['updates_sent_per_s']:,}; out of order at viewers: "
        f"{r['out_of_order']}; replica CPU %: {r['replica_cpu_percent']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="300 bots, 30 viewers, 20 s")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--bots", type=int)
    p.add_argument("--hz", type=float, default=10.0)
    p.add_argument("--viewers", type=int)
    p.add_argument("--duration", type=float)
    p.add_argument("--tick-ms", type=int, default=500)
    p.add_argument("--encoding", choices=("json", "msgpack"), default="json")
    p.add_argument("--json-out", help="also write the figures as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the replicas' logs")
    args = p.parse_args(argv)
    quick = args.quick
    args.bots = args.bots if args.bots is not None else (300 if quick else 1000)
    args.viewers = args.viewers if args.viewers is not None else (30 if quick else 200)
    args.duration = args.duration if args.duration is not None else (20.0 if quick else 60.0)
    if args.replicas < 2 or args.tick_ms <= 0:
        p.error("needs >= 2 replicas and a positive tick (cross-replica latency per tick)")
    result = run(args)
    print(json.dumps(result), file=sys.stderr)
    print(markdown(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
