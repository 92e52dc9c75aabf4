"""The box's capacity (`make bench-capacity`): the highest offered updates/s at which the e2e
p99 stays within a bound, for the gateway with 1 process, `serve --processes 2` and the
Node.js peer, with the same load generator on the same box.

    python scripts/bench_capacity.py                   # 1000..4000 bots x 10 Hz + 200 viewers
    python scripts/bench_capacity.py --steps 1000,2000,3000 --hz 10 --viewers 200 --duration 20
    python scripts/bench_capacity.py --target gateway-2 --p99-ms 550

For every target it climbs a ladder of offered loads (bots x Hz): each step is a fresh server
on a fresh database of one throwaway PostgreSQL, driven by scripts/loadgen.py through
scripts/bench.py's run_one (the `make bench` run, same figures). `gateway-2` runs
`serve --processes 2` joined through a throwaway Redis (flushed before every step). A ladder
stops at the first step that is out of bound:

- e2e p99 (bot send -> viewer receipt) above --p99-ms (default 550 ms: the 500 ms tick plus
  50 ms), or no latency samples at all;
- the bots sent less than 95 % of the offered updates/s (the server, or the box, did not keep
  up with reading them);
- the viewers received less than 95 % of what coalescing owes them: each bot's latest
  position once per tick, bots x min(Hz, 1000 / tick ms) updates/s per viewer, less one tick
  per bot over the window (where its edges cut a tick is chance);
- the run failed (the server or the load generator died, or timed out).

How to read it: "capacity ≈ X updates/s" is the offered load of the last step within bound,
so the true figure lies between X and the next step. It is the capacity of this box *with its
load generator on it*: the load generator's processes share the same cores as the server
(PostgreSQL and Redis too), so a bigger load costs the server CPU twice, once to serve it and
once to generate it; on a machine of its own the server would go further. CPU % is the
server's whole process tree (parent, replicas, their workers) over the sending window, 100 %
a core: on 2 cores, 200 % is the box. Figures are printed, never asserted; the steps are
coarse and one run each, so treat a difference of one step between targets as noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import (
    RunResult,
    _fmt,
    add_output_arguments,
    box_note,
    prepare_peer,
    run_loop,
    run_one,
    table_head,
    tree_cpu_seconds,
)

# --target names: (server kind for run_one, `serve --processes`, label in the table)
TARGETS = {
    "gateway": ("gateway", 1, "gateway, 1 process"),
    "gateway-2": ("gateway", 2, "gateway, 2 processes + Redis"),
    "peer": ("peer", 1, "Node.js peer"),
}
COLUMNS = (
    "server|bots|offered updates/s|sent/s|applied/s per viewer|e2e p50 / p95 / p99 ms|CPU %|"
    "within bound"
).split("|")
DELIVERED_MIN = 0.95  # share of offered (sent) and of owed (viewers) a step must reach


@dataclass
class Step:
    target: str
    bots: int
    offered: float
    result: RunResult
    verdict: str | None  # None: within bound; else why not


def owed_rate(args: argparse.Namespace) -> float:
    """Updates per bot per second a viewer is owed: one per tick (or per send, without a
    tick), less one over the window: where the window's edges cut a tick is chance."""
    rate = min(args.hz, 1000 / args.tick_ms) if args.tick_ms else args.hz
    return max(0.0, rate - 1 / args.duration)


def verdict(args: argparse.Namespace, bots: int, result: RunResult) -> str | None:
    """None when the step is within bound, else the first reason it is not."""
    if result.error:
        return f"failed: {result.error[:80]}"
    f = result.figures
    offered = bots * args.hz
    owed = bots * owed_rate(args)
    p99 = f["latency_ms"].get("p99")
    if p99 is None:
        return "no latency samples"
    if p99 > args.p99_ms:
        return f"p99 {p99:,.0f} ms > {args.p99_ms:g} ms"
    if f["updates_sent_per_s"] < DELIVERED_MIN * offered:
        return f"sent {100 * f['updates_sent_per_s'] / offered:.0f} % of offered"
    if f["updates_applied_per_viewer_per_s"] < DELIVERED_MIN * owed:
        return f"viewers got {100 * f['updates_applied_per_viewer_per_s'] / owed:.0f} % of owed"
    return None


def capacity_line(label: str, steps: list[Step]) -> str:
    within = [s for s in steps if s.verdict is None]
    if not within:
        first = steps[0].offered if steps else 0
        return f"{label}: capacity < {first:,.0f} updates/s (no step within bound)"
    last = within[-1]
    if last is steps[-1]:
        return (
            f"{label}: capacity ≥ {last.offered:,.0f} updates/s "
            "(every step within bound: add higher --steps)"
        )
    return f"{label}: capacity ≈ {last.offered:,.0f} updates/s (last step within bound)"


def markdown(args: argparse.Namespace, steps: list[Step]) -> str:
    head = (
        f"offered load: bots x {args.hz:g} Hz + {args.viewers} viewers, {args.duration:g} s a "
        f"step, tick {args.tick_ms} ms, JSON, {box_note(args)}, PostgreSQL (throwaway); "
        f"bound: e2e p99 ≤ {args.p99_ms:g} ms and ≥ {100 * DELIVERED_MIN:.0f} % delivered"
    )
    lines = table_head(head, COLUMNS)
    for s in steps:
        label = TARGETS[s.target][2]
        if s.result.error:
            row = [label, _fmt(s.bots), _fmt(s.offered, 0), "-", "-", "-", "-", s.verdict or ""]
        else:
            f = s.result.figures
            lat = f["latency_ms"]
            row = [
                label,
                _fmt(s.bots),
                _fmt(s.offered, 0),
                _fmt(f["updates_sent_per_s"], 0),
                _fmt(f["updates_applied_per_viewer_per_s"], 0),
                " / ".join(_fmt(lat.get(q), 1) for q in ("p50", "p95", "p99")),
                _fmt(f["cpu_percent"], 0),
                "yes" if s.verdict is None else f"no: {s.verdict}",
            ]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for target in args.targets:
        lines.append(
            "- " + capacity_line(TARGETS[target][2], [s for s in steps if s.target == target])
        )
    lines += [
        "",
        "offered: bots x Hz. sent/s: what the bots got written. applied/s per viewer: updates "
        "each viewer received (coalescing owes bots x min(Hz, 1000 / tick ms)). CPU %: the "
        "server's process tree over the sending window, 100 % a core. The load generator runs "
        "on the same cores: this is the capacity of the box with its load generator.",
    ]
    return "\n".join(lines)


async def ladder(
    args: argparse.Namespace, target: str, pg: Any, redis: Any, peer_dir: Path | None
) -> list[Step]:
    kind, processes, label = TARGETS[target]
    steps: list[Step] = []
    for bots in args.steps:
        db_url = await asyncio.to_thread(
            pg.create_database, f"capacity_{target.replace('-', '_')}_{secrets.token_hex(3)}"
        )
        extra_env: dict[str, str] = {}
        if processes > 1:
            await asyncio.to_thread(redis.flushall)
            extra_env["GATEWAY_REDIS_URL"] = redis.url
        step_args = argparse.Namespace(**{**vars(args), "bots": bots})
        print(f"capacity: {label}, {bots} bots x {args.hz:g} Hz ...", file=sys.stderr, flush=True)
        result = await run_one(
            step_args,
            kind,
            args.tick_ms,
            db_url,
            peer_dir,
            processes=processes,
            extra_env=extra_env,
            cpu=tree_cpu_seconds,
        )
        print(json.dumps(result.__dict__, default=str), file=sys.stderr, flush=True)
        step = Step(target, bots, bots * args.hz, result, verdict(args, bots, result))
        steps.append(step)
        if step.verdict is not None:
            print(f"capacity: {label} stops: {step.verdict}", file=sys.stderr, flush=True)
            break
    return steps


async def amain(args: argparse.Namespace) -> int:
    peer_dir = prepare_peer(args.peer_dir) if "peer" in args.targets else None
    if peer_dir is None:
        args.targets = [t for t in args.targets if t != "peer"]
    from gateway.testing.postgres_server import PostgresServer

    pg = PostgresServer()
    await asyncio.to_thread(pg.start)
    redis: Any = None
    steps: list[Step] = []
    try:
        if any(TARGETS[t][1] > 1 for t in args.targets):
            from gateway.testing.redis_server import RedisServer

            redis = RedisServer()
            await asyncio.to_thread(redis.start)
        for target in args.targets:
            steps += await ladder(args, target, pg, redis, peer_dir)
    finally:
        if redis is not None:
            await asyncio.to_thread(redis.close)
        await asyncio.to_thread(pg.close)
    print(markdown(args, steps))
    if args.json_out:
        payload = json.dumps([s.__dict__ for s in steps], indent=2, default=lambda o: o.__dict__)
        await asyncio.to_thread(Path(args.json_out).write_text, payload)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", default="1000,1500,2000,2500,3000,4000", help="comma list of bots")
    p.add_argument("--hz", type=float, default=10.0, help="positions per bot per second")
    p.add_argument("--viewers", type=int, default=200)
    p.add_argument("--duration", type=float, default=20.0, help="sending seconds per step")
    p.add_argument("--p99-ms", type=float, default=550.0, help="bound on the e2e p99")
    p.add_argument("--tick-ms", type=int, default=500, help="GATEWAY_TICK_MS of every server")
    p.add_argument(
        "--target", default="gateway,gateway-2,peer", help="comma list: " + ", ".join(TARGETS)
    )
    p.add_argument("--processes", type=int, default=2, help="load generator processes")
    add_output_arguments(p)
    args = p.parse_args(argv)
    args.encoding = "json"  # one encoding for every target: the ladder of docs/benchmarks.md
    args.steps = sorted(int(b) for b in args.steps.split(",") if b.strip())
    args.targets = [t.strip() for t in args.target.split(",") if t.strip()]
    if not args.steps or not args.targets or not set(args.targets) <= set(TARGETS):
        p.error("--steps takes bot counts, --target some of: " + ", ".join(TARGETS))
    return run_loop(amain(args))


if __name__ == "__main__":
    sys.exit(main())
