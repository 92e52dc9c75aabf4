"""The benchmark `make bench` runs: our gateway (and the Node.js peer) under the same load.

    python scripts/bench.py                 # 1000 bots x 10 Hz + 200 viewers, 60 s per run
    python scripts/bench.py --quick         # 200 bots x 10 Hz + 20 viewers, 15 s per run
    python scripts/bench.py --tick-ms 500 --target gateway

For every (tick, target) pair it starts a fresh server on a throwaway PostgreSQL (one cluster,
one database per run), drives it with scripts/loadgen.py over loopback and prints a markdown
table ready for docs/benchmarks.md. Figures are printed, never asserted. Sources:

- updates/s, latency, frames/viewer/s, final-position delivery: the load generator's viewers;
- DB statements/s: PostgreSQL's own pg_stat_statements, calls of INSERT/UPDATE statements on
  the NPC tables (`npcs`; the peer's `peer_npcs`) between "go" and "stop"; rows/s from
  pg_stat_user_tables (n_tup_ins + n_tup_upd on those tables);
- tick lateness: the server's `GET /api/performance` → `tick.latenessMs.p99` (ours only);
- CPU: /proc/PID/stat utime+stime over the sending window; RSS: /proc/PID/status VmRSS before
  and after the idle connections are made (per idle connection), VmHWM at the end (peak).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.testing.proctree import descendants

REPO = Path(__file__).resolve().parents[1]
LOADGEN = REPO / "scripts" / "loadgen.py"
PEER_DIR = REPO / "scripts" / "bench-peer"
CLK_TCK = os.sysconf("SC_CLK_TCK")
IDLE_S = 3.0  # connections sit idle this long before sending starts (RSS is sampled then)

# Position writes: INSERT/UPDATE statements that touch an NPC table (ours `npcs`, the peer's
# `peer_npcs`), read from pg_stat_statements.
WRITE_CALLS_SQL = r"""
SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query ~* '^\s*(insert|update)' AND query ~* '\mnpcs\M|peer_npcs'
"""
ALL_CALLS_SQL = """
SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
ROWS_SQL = """
SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0)::bigint FROM pg_stat_user_tables
WHERE relname IN ('npcs', 'peer_npcs')
"""


# -- process figures -----------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included, its children not)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of pid and of every live descendant (`serve --processes N`: the parent,
    its replicas and their workers)."""
    total = cpu_seconds(pid)
    for child in descendants(pid):
        with contextlib.suppress(OSError):  # exited since the walk
            total += cpu_seconds(child)
    return total


def memory_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


async def performance(base: str, token: str) -> Any:
    """The server's /api/performance, or None: a swamped server must not fail the run."""
    try:
        return (await asyncio.to_thread(http_json, base + "/api/performance", token, 15.0))[1]
    except (OSError, ValueError) as exc:
        print(f"bench: /api/performance unavailable: {exc!r}", file=sys.stderr)
        return None


# -- database statistics -------------------------------------------------------------------------
class DbStats:
    """Counters read from PostgreSQL's own statistics views for one database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None

    async def open(self) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(self.url)
        await self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    async def read(self) -> dict[str, int]:
        # pg_stat_statements counts at once; table counters arrive up to ~1 s late.
        return {
            "write_calls": await self.conn.fetchval(WRITE_CALLS_SQL),
            "all_calls": await self.conn.fetchval(ALL_CALLS_SQL),
            "rows": await self.conn.fetchval(ROWS_SQL),
            "commits": await self.conn.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            ),
        }

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


# -- one run -------------------------------------------------------------------------------------
@dataclass
class RunResult:
    target: str
    tick_ms: int
    load: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def server_command(
    target: str, port: int, peer_dir: Path | None, processes: int = 1
) -> tuple[list[str], Path]:
    """The server's command line and directory; `processes` > 1: `serve --processes N` (the
    gateway only; it needs GATEWAY_REDIS_URL)."""
    if target == "peer":
        assert peer_dir is not None
        return ["node", "server.js", "--port", str(port)], peer_dir
    cmd = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    return cmd, REPO


async def wait_healthy(
    proc: asyncio.subprocess.Process, base: str, deadline_s: float, replicas: int = 1
) -> None:
    """Until `replicas` distinct replicas have answered 200 (`serve --processes N`: the kernel
    hands each new connection to one of them, so every one is up before the load starts)."""
    end = time.monotonic() + deadline_s
    seen: set[Any] = set()
    while time.monotonic() < end:
        if proc.returncode is not None:
            raise RuntimeError(f"server exited with {proc.returncode} while starting")
        with contextlib.suppress(OSError):
            status, body = await asyncio.to_thread(http_json, base + "/api/health", None, 1.0)
            if status == 200:
                seen.add(body.get("replica") if isinstance(body, dict) else None)
                if len(seen) >= replicas:
                    return
        await asyncio.sleep(0.1)  # poll interval while the server starts
    raise TimeoutError(f"server not healthy within {deadline_s:.0f} s")


async def run_one(
    args: argparse.Namespace,
    target: str,
    tick_ms: int,
    db_url: str | None,
    peer_dir: Path | None,
    *,
    processes: int = 1,
    extra_env: dict[str, str] | None = None,
    cpu: Callable[[int], float] = cpu_seconds,
) -> RunResult:
    """One server, one load: figures, or `error` set. `processes`, `extra_env` (e.g.
    GATEWAY_REDIS_URL) and `cpu` (per server pid, e.g. tree_cpu_seconds) serve
    scripts/bench_capacity.py; `make bench` leaves them at their defaults."""
    result = RunResult(target, tick_ms)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    secret = secrets.token_urlsafe(32)
    work = Path(tempfile.mkdtemp(prefix=f"aicraft-bench-{target}-"))
    env = {
        **os.environ,
        "GATEWAY_SECRET": secret,
        "GATEWAY_TICK_MS": str(tick_ms),
        "GATEWAY_DATA_DIR": str(work / "data"),
        "GATEWAY_LOG_LEVEL": "WARNING",
    }
    env.pop("GATEWAY_REDIS_URL", None)
    if db_url:
        env["GATEWAY_DATABASE_URL"] = db_url
    else:
        env.pop("GATEWAY_DATABASE_URL", None)
    env.update(extra_env or {})
    from gateway.auth import issue_token

    admin = issue_token(secret, "admin", "bench", 3600)
    cmd, cwd = server_command(target, port, peer_dir, processes)
    log_path = work / "server.log"
    lg_log = work / "loadgen.log"
    db = DbStats(db_url) if db_url else None
    server: asyncio.subprocess.Process | None = None
    loadgen: asyncio.subprocess.Process | None = None
    try:
        with log_path.open("wb") as log:
            server = await asyncio.create_subprocess_exec(
                *cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        await wait_healthy(server, base, 60, processes)
        if db is not None:
            await db.open()
        await asyncio.sleep(1.0)  # let start-up allocations settle before the baseline
        rss_base = memory_kb(server.pid)["VmRSS"]
        grace = max(2.0, 2 * tick_ms / 1000 + 1.0)
        lg_cmd = [
            sys.executable,
            str(LOADGEN),
            "--url",
            f"ws://127.0.0.1:{port}",
            "--secret",
            secret,
            "--bots",
            str(args.bots),
            "--hz",
            str(args.hz),
            "--viewers",
            str(args.viewers),
            "--duration",
            str(args.duration),
            "--encoding",
            args.encoding,
            "--processes",
            str(args.processes),
            "--grace",
            str(grace),
            "--idle",
            str(IDLE_S),
            "--events",
        ]
        # stderr to a file: an unread pipe could fill up and stall the load generator.
        with lg_log.open("wb") as lg_err:
            loadgen = await asyncio.create_subprocess_exec(
                *lg_cmd, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=lg_err
            )
        assert loadgen.stdout is not None
        budget = 180 + IDLE_S + args.duration + grace + 60
        marks: dict[str, Any] = {}
        async with asyncio.timeout(budget):
            async for line in loadgen.stdout:
                event = json.loads(line)
                kind = event.get("event")
                if kind == "ready":
                    await asyncio.sleep(IDLE_S / 2)  # idle connections, mid-way through
                    marks["rss_idle"] = memory_kb(server.pid)["VmRSS"]
                elif kind == "go":
                    marks["cpu0"], marks["t0"] = cpu(server.pid), time.monotonic()
                    marks["db0"] = await db.read() if db else None
                    marks["perf0"] = await performance(base, admin)
                elif kind == "stop":
                    marks["cpu1"], marks["t1"] = cpu(server.pid), time.monotonic()
                    marks["db1"] = await db.read() if db else None
                    marks["mem"] = memory_kb(server.pid)
                    marks["perf1"] = await performance(base, admin)
                elif kind == "result":
                    result.load = event
            await loadgen.wait()
        if loadgen.returncode or not result.load:
            tail = lg_log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"loadgen exited with {loadgen.returncode}: {tail}")
        result.figures = figures(result.load, marks, rss_base)
    except Exception as exc:  # one failed run must not hide the others' figures
        result.error = f"{type(exc).__name__}: {exc}"
        log_tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
        print(f"bench: {target} tick {tick_ms} failed: {result.error}\n{log_tail}", file=sys.stderr)
    finally:
        if loadgen is not None and loadgen.returncode is None:
            loadgen.kill()
            await loadgen.wait()
        if server is not None and server.returncode is None:
            server.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await server.wait()
            except TimeoutError:
                server.kill()
                await server.wait()
        if db is not None:
            await db.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return result


def figures(load: dict[str, Any], marks: dict[str, Any], rss_base: int) -> dict[str, Any]:
    wall = marks["t1"] - marks["t0"]
    cpu = marks["cpu1"] - marks["cpu0"]
    sent = load["updates_sent_per_s"] * load["duration_s"]
    conns = load["connect"]["bots"] + load["connect"]["viewers"]
    out: dict[str, Any] = {
        "updates_sent_per_s": load["updates_sent_per_s"],
        "updates_applied_per_s": load["updates_applied_per_s"],
        "updates_applied_per_viewer_per_s": load["updates_applied_per_viewer_per_s"],
        "latency_ms": load["latency_ms"],
        "delivery_ms": load.get("delivery_ms"),
        "frames_per_viewer_per_s": load["frames_per_viewer_per_s"],
        "final_delivered": load["final_delivered"],
        "out_of_order": load["out_of_order"],
        "connect_failures": load["connect"]["failures"],
        "errors_received": load["errors_received"],
        "loadgen_cpu_percent": load["loadgen_cpu_percent"],
        "cpu_percent": round(100 * cpu / wall, 1),
        "cpu_us_per_update": round(cpu * 1e6 / sent, 1) if sent else None,
        "rss_peak_mb": round(marks["mem"]["VmHWM"] / 1024, 1),
        "rss_per_idle_conn_kb": round((marks["rss_idle"] - rss_base) / conns, 1) if conns else None,
    }
    db0, db1 = marks.get("db0"), marks.get("db1")
    if db0 and db1:
        out["db_write_statements_per_s"] = round(
            (db1["write_calls"] - db0["write_calls"]) / wall, 1
        )
        out["db_statements_per_s"] = round((db1["all_calls"] - db0["all_calls"]) / wall, 1)
        out["db_rows_per_s"] = round((db1["rows"] - db0["rows"]) / wall, 1)
        out["db_commits_per_s"] = round((db1["commits"] - db0["commits"]) / wall, 1)
    perf = marks.get("perf1") or {}
    tick = perf.get("tick") if isinstance(perf, dict) else None
    if isinstance(tick, dict) and isinstance(tick.get("latenessMs"), dict):
        out["tick_lateness_ms"] = tick["latenessMs"]
    gc_window = gc_during(marks.get("perf0") or {}, perf)
    if gc_window:
        out["gc"] = gc_window
    out["server_performance"] = perf
    return out


def gc_during(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any] | None:
    """The gateway's garbage collections while the load ran (`process.gc.pauses` before and
    after): collections per generation, their pause time, pauses of 5 ms or more; the longest
    pause is since start-up (connections included)."""
    try:
        p0, p1 = before["process"]["gc"]["pauses"], after["process"]["gc"]["pauses"]
    except (KeyError, TypeError):
        return None  # the peer, or a gateway without the figures
    gens = [f"gen{g}" for g in range(3)]
    return {
        "collections": [p1[g]["collections"] - p0[g]["collections"] for g in gens],
        "pause_ms": round(sum(p1[g]["totalMs"] - p0[g]["totalMs"] for g in gens), 1),
        "slow_pauses": p1["slow"] - p0["slow"],
        "max_pause_ms_since_start": max(p1[g]["maxMs"] for g in gens),
    }


# -- the Node.js peer ----------------------------------------------------------------------------
def prepare_peer(peer_dir: Path) -> Path | None:
    """The peer with its locked npm packages installed (`npm ci`, once); None, and a note, when
    this machine has no Node.js: the comparison is optional, the gateway's figures are not."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        print("note: node/npm not found: running without the Node.js peer", file=sys.stderr)
        return None
    if not (peer_dir / "server.js").exists():
        raise RuntimeError(f"peer not found at {peer_dir} (use --peer-dir)")
    if not (peer_dir / "node_modules" / ".package-lock.json").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=peer_dir,
            check=True,
            timeout=300,
            stdout=subprocess.DEVNULL,
        )
    return peer_dir


# -- report --------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def box_note(args: argparse.Namespace) -> str:
    """Where the figures were taken: one box, its cores shared with the load generator."""
    return (
        f"loopback, {os.cpu_count()} cores shared with the load generator "
        f"({args.processes} process(es))"
    )


def table_head(head: str, cols: list[str]) -> list[str]:
    """A line of context, a blank line, then a markdown table's header and rule."""
    return [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]


def markdown(args: argparse.Namespace, results: list[RunResult]) -> str:
    head = (
        f"{args.bots:,} bots x {args.hz:g} Hz + {args.viewers} viewers, {args.duration:g} s, "
        f"{args.encoding.upper()}, {box_note(args)}, database: "
        f"{'PostgreSQL (throwaway)' if args.db == 'postgres' else 'SQLite'}"
    )
    cols = [
        "server",
        "tick ms",
        "updates/s sent",
        "applied/s per viewer",
        "e2e p50 / p95 / p99 ms",
        "cut → viewer p50 / p99 ms",
        "frames/viewer/s",
        "final pos delivered",
        "DB writes/s",
        "tick lateness p99 ms",
        "GC pauses ≥ 5 ms",
        "CPU %",
        "CPU µs/update",
        "RSS peak MB",
        "RSS/idle conn KB",
    ]
    lines = table_head(head, cols)
    for r in results:
        name = "Node.js peer" if r.target == "peer" else "gateway"
        if r.error:
            lines.append(
                f"| {name} | {r.tick_ms} | failed: {r.error[:80]} |" + " |" * (len(cols) - 3)
            )
            continue
        f = r.figures
        lat = f["latency_ms"]
        cut = f.get("delivery_ms") or {}
        tick = f.get("tick_lateness_ms") or {}
        final = f["final_delivered"]
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    str(r.tick_ms),
                    _fmt(f["updates_sent_per_s"]),
                    _fmt(f["updates_applied_per_viewer_per_s"]),
                    f"{_fmt(lat['p50'], 1)} / {_fmt(lat['p95'], 1)} / {_fmt(lat['p99'], 1)}",
                    f"{_fmt(cut.get('p50'), 1)} / {_fmt(cut.get('p99'), 1)}",
                    _fmt(f["frames_per_viewer_per_s"], 1),
                    "-" if final is None else f"{100 * final:.1f} %",
                    _fmt(f.get("db_write_statements_per_s"), 1),
                    _fmt(tick.get("p99"), 1),
                    _fmt((f.get("gc") or {}).get("slow_pauses")),
                    _fmt(f["cpu_percent"], 0),
                    _fmt(f["cpu_us_per_update"], 1),
                    _fmt(f["rss_peak_mb"], 0),
                    _fmt(f["rss_per_idle_conn_kb"], 1),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "DB writes/s: calls of INSERT/UPDATE statements on the NPC tables per second, from "
        "pg_stat_statements. e2e latency: bot send → viewer receipt, for the updates viewers "
        "saw. cut → viewer: from the tick's cut (the frame's `ts`) to the viewer reading it. "
        "GC pauses: the gateway's cyclic-collector pauses of 5 ms or more while the load "
        "ran (gc.callbacks). CPU and RSS: the server process only (/proc). Load generator CPU "
        "% per process: "
        + "; ".join(
            f"{'peer' if r.target == 'peer' else 'gateway'}@{r.tick_ms}: "
            + ", ".join(_fmt(c, 0) for c in r.figures.get("loadgen_cpu_percent", []))
            for r in results
            if not r.error
        ),
    ]
    return "\n".join(lines)


async def amain(args: argparse.Namespace) -> int:
    peer_dir = prepare_peer(args.peer_dir) if "peer" in args.targets else None
    if peer_dir is None:
        args.targets = [t for t in args.targets if t != "peer"]
    pg: Any = None
    if args.db == "postgres":
        from gateway.testing.postgres_server import PostgresServer

        pg = PostgresServer()
        await asyncio.to_thread(pg.start)
    results: list[RunResult] = []
    try:
        for tick in args.ticks:
            for target in args.targets:
                db_url = None
                if pg is not None:
                    name = f"bench_{target}_{tick}_{secrets.token_hex(3)}"
                    db_url = await asyncio.to_thread(pg.create_database, name)
                print(f"bench: {target}, tick {tick} ms ...", file=sys.stderr, flush=True)
                result = await run_one(args, target, tick, db_url, peer_dir)
                results.append(result)
                print(json.dumps(result.__dict__, default=str), file=sys.stderr, flush=True)
    finally:
        if pg is not None:
            await asyncio.to_thread(pg.close)
    print(markdown(args, results))
    if args.json_out:
        payload = json.dumps([r.__dict__ for r in results], indent=2, default=str)
        await asyncio.to_thread(Path(args.json_out).write_text, payload)
    return 1 if any(r.error for r in results) else 0


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """--peer-dir, --json-out, --keep: as run_one and prepare_peer read them."""
    p.add_argument("--peer-dir", type=Path, default=PEER_DIR)
    p.add_argument("--json-out", help="also write every figure as JSON here")
    p.add_argument("--keep", action="store_true", help="keep each run's temp dir (server log)")


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """main on uvloop when it is installed (as the gateway serves), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="200 bots, 20 viewers, 15 s")
    p.add_argument("--bots", type=int)
    p.add_argument("--hz", type=float, default=10.0)
    p.add_argument("--viewers", type=int)
    p.add_argument("--duration", type=float)
    p.add_argument("--tick-ms", default="0,500", help="comma list of GATEWAY_TICK_MS values")
    p.add_argument("--target", default="gateway,peer", help="comma list: gateway, peer")
    p.add_argument("--encoding", choices=("json", "msgpack"), default="json")
    p.add_argument("--processes", type=int, default=2, help="load generator processes")
    p.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    add_output_arguments(p)
    args = p.parse_args(argv)
    quick = args.quick
    args.bots = args.bots if args.bots is not None else (200 if quick else 1000)
    args.viewers = args.viewers if args.viewers is not None else (20 if quick else 200)
    args.duration = args.duration if args.duration is not None else (15.0 if quick else 60.0)
    args.ticks = [int(t) for t in args.tick_ms.split(",") if t.strip()]
    args.targets = [t.strip() for t in args.target.split(",") if t.strip()]
    if not set(args.targets) <= {"gateway", "peer"}:
        p.error("--target takes gateway and/or peer")
    return run_loop(amain(args))


if __name__ == "__main__":
    sys.exit(main())
