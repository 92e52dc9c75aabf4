"""Load generator: N bots stream positions at R Hz, M viewers watch, over loopback, for D seconds.

    python scripts/loadgen.py --url ws://127.0.0.1:8080 --secret S --bots 1000 --hz 10 \\
        --viewers 200 --duration 60 --processes 2

Bots are lean senders, not the SDK: each holds a `websockets` connection (handshake, auth,
welcome, a reader for errors) but writes its `pos` frames straight to the transport, masked by
websockets' C helper, from one pacer per process that spreads the sends evenly over each period.

Latency: every bot puts its send time, in ms since a start instant shared by all processes, in
`x`, and its sequence number in `z`. A viewer timestamps each frame on receipt; for the updates
it sees, latency = receipt time - x (one clock: everything runs on this machine). When the run
ends each bot sends one last position with z = -1; `final_delivered` is the share of (viewer,
bot) pairs whose last seen update is that one (contract: the last position reaches every viewer).
`delivery_ms` splits the server's share off: receipt time - the frame's `ts` (the tick's cut),
per frame; what is left of the latency is the update's age at the cut.

Prints one JSON object of figures (with `--events`: one JSON object per line, `ready` / `go` /
`stop` as the phases begin, then `result`; scripts/bench.py reads that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import multiprocessing as mp
import queue
import random
import shlex
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the pure-Python fallback is slow but correct
    from websockets.utils import apply_mask

JSON_PROTO = "aicraft.v1.json"
MSGPACK_PROTO = "aicraft.v1.msgpack"
SLOT_S = 0.005  # pacer granularity: bots are spread over the period in 5 ms groups
WRITE_BUFFER_LIMIT = 64 * 1024  # skip a bot's send while the gateway is not reading it
LAT_STEP = math.log(1.01)  # latency histogram: log bins, 1 % wide, from 0.01 ms
LAT_SAMPLES_PER_FRAME = 64


# -- latency histogram ---------------------------------------------------------------------------
def hist_add(hist: dict[int, int], latency_ms: float) -> None:
    index = int(math.log(max(latency_ms, 0.01) / 0.01) / LAT_STEP)
    hist[index] = hist.get(index, 0) + 1


def hist_percentiles(hist: dict[int, int]) -> dict[str, float | int | None]:
    total = sum(hist.values())
    out: dict[str, float | int | None] = {"samples": total}
    if not total:
        return {**out, "p50": None, "p95": None, "p99": None, "max": None}
    bins = sorted(hist.items())
    for q in (50, 95, 99):
        need, seen = q / 100 * total, 0
        for index, count in bins:
            seen += count
            if seen >= need:
                out[f"p{q}"] = round(0.01 * math.exp((index + 1) * LAT_STEP), 2)
                break
    out["max"] = round(0.01 * math.exp((bins[-1][0] + 1) * LAT_STEP), 2)
    return out


# -- frames --------------------------------------------------------------------------------------
def client_frame(payload: bytes, opcode: int) -> bytes:
    """One masked, unfragmented client frame (RFC 6455 §5.2)."""
    mask = random.randbytes(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    else:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    return header + mask + apply_mask(payload, mask)


def pos_payload(encoding: str, x: float, seq: int) -> bytes:
    if encoding == "json":
        return b'{"type":"pos","x":%.2f,"y":64,"z":%d,"yaw":0,"pitch":0}' % (x, seq)
    return msgpack.packb({"type": "pos", "x": x, "y": 64, "z": seq, "yaw": 0, "pitch": 0})


def decoder(encoding: str) -> Any:
    if encoding == "json":
        return orjson.loads
    return lambda data: msgpack.unpackb(data, raw=False, strict_map_key=False)


# -- one worker process --------------------------------------------------------------------------
@dataclass
class Config:
    url: str
    encoding: str
    hz: float
    duration: float
    grace: float
    t0: float  # the shared start instant (epoch s) that `x` counts from
    connect_concurrency: int = 64


@dataclass
class WorkerStats:
    bots_connected: int = 0
    viewers_connected: int = 0
    connect_failures: int = 0
    connect_errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    send_skipped: int = 0
    pacer_lag_ms_max: float = 0.0
    pacer_slots: int = 0
    pacer_late_slots: int = 0  # slots that began more than one slot late
    errors_received: Counter[str] = field(default_factory=Counter)
    close_codes: Counter[str] = field(default_factory=Counter)
    frames: int = 0  # positions frames received in the window, all viewers
    frames_total: int = 0
    applied: int = 0  # updates (sent in the window) received, all viewers
    out_of_order: int = 0
    final_delivered: int = 0
    latency: dict[int, int] = field(default_factory=dict)
    delivery: dict[int, int] = field(default_factory=dict)  # frame's cut `ts` -> read here
    cpu_s: float = 0.0
    wall_s: float = 0.0


class Worker:
    def __init__(self, cfg: Config, bots: list[tuple[str, str]], viewer_tokens: list[str]) -> None:
        self.cfg = cfg
        self.bot_specs = bots
        self.viewer_tokens = viewer_tokens
        self.stats = WorkerStats()
        self.bots: list[tuple[str, ClientConnection]] = []
        self.viewers: list[ClientConnection] = []
        self.last_seen: list[dict[str, int]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.proto = MSGPACK_PROTO if cfg.encoding == "msgpack" else JSON_PROTO
        self.opcode = 0x2 if cfg.encoding == "msgpack" else 0x1
        self.loads = decoder(cfg.encoding)
        self.window = (0.0, 0.0)  # ms since t0: updates sent inside it are counted

    async def _connect(self, path: str, token: str, sem: asyncio.Semaphore) -> ClientConnection:
        async with sem:
            ws = await connect(
                self.cfg.url.rstrip("/") + path,
                additional_headers={"Authorization": f"Bearer {token}"},
                subprotocols=[Subprotocol(self.proto)],
                compression=None,
                proxy=None,
                open_timeout=30,
                ping_interval=None,  # 1,000 keepalives would only add noise
                max_size=None,
                max_queue=None,  # viewers must never push back on the gateway from here
            )
            welcome = self.loads(await ws.recv(decode=False))
            if welcome.get("type") != "welcome":
                await ws.close()
                raise RuntimeError(f"expected welcome, got {welcome.get('type')}")
            return ws

    async def _connect_counted(
        self, path: str, token: str, sem: asyncio.Semaphore
    ) -> ClientConnection | None:
        """`_connect`, or None with the failure counted by kind: a load run reports them."""
        try:
            return await self._connect(path, token, sem)
        except Exception as exc:
            self.stats.connect_failures += 1
            self.stats.connect_errors[type(exc).__name__] += 1
            return None

    async def connect_all(self) -> None:
        sem = asyncio.Semaphore(self.cfg.connect_concurrency)

        async def bot(npc: str, token: str) -> None:
            ws = await self._connect_counted("/ws/npc", token, sem)
            if ws is None:
                return
            self.bots.append((npc, ws))
            self.tasks.append(asyncio.create_task(self._bot_reader(ws)))

        async def viewer(token: str) -> None:
            ws = await self._connect_counted("/ws/viewer", token, sem)
            if ws is None:
                return
            seen: dict[str, int] = {}
            self.viewers.append(ws)
            self.last_seen.append(seen)
            self.tasks.append(asyncio.create_task(self._viewer_reader(ws, seen)))

        # Viewers first, so they see every bot join.
        await asyncio.gather(*(viewer(t) for t in self.viewer_tokens))
        await asyncio.gather(*(bot(n, t) for n, t in self.bot_specs))
        self.stats.bots_connected = len(self.bots)
        self.stats.viewers_connected = len(self.viewers)

    async def _bot_reader(self, ws: ClientConnection) -> None:
        try:
            async for data in ws:
                msg = self.loads(data)
                if msg.get("type") == "error":
                    self.stats.errors_received[str(msg.get("code"))] += 1
        except Exception:
            pass
        finally:
            self.stats.close_codes[f"bot:{ws.close_code}"] += 1

    async def _viewer_reader(self, ws: ClientConnection, seen: dict[str, int]) -> None:
        st, t0, loads = self.stats, self.cfg.t0, self.loads
        try:
            while True:
                data = await ws.recv(decode=False)
                now_ms = (time.time() - t0) * 1000
                msg = loads(data)
                if msg.get("type") == "error":
                    st.errors_received[str(msg.get("code"))] += 1
                if msg.get("type") != "positions":
                    continue
                st.frames_total += 1
                start_ms, end_ms = self.window
                if start_ms <= now_ms <= end_ms:
                    st.frames += 1
                    hist_add(st.delivery, now_ms - (msg["ts"] - t0 * 1000))
                updates = msg["updates"]
                applied = 0
                for u in updates:
                    npc, seq = u["id"], u["z"]
                    prev = seen.get(npc)
                    seen[npc] = seq
                    if prev is not None and (prev == -1 or 0 <= seq < prev):
                        st.out_of_order += 1
                    if seq >= 0 and start_ms <= u["x"] <= end_ms:
                        applied += 1
                st.applied += applied
                step = max(1, len(updates) // LAT_SAMPLES_PER_FRAME)
                hist = st.latency
                for u in updates[::step]:
                    x = u["x"]
                    if start_ms <= x <= end_ms and u["z"] >= 0:
                        hist_add(hist, now_ms - x)
        except Exception:
            pass
        finally:
            self.stats.close_codes[f"viewer:{ws.close_code}"] += 1

    async def run(self, go_at: float) -> None:
        cfg, st = self.cfg, self.stats
        end_at = go_at + cfg.duration
        self.window = ((go_at - cfg.t0) * 1000, (end_at - cfg.t0) * 1000)
        period = 1 / cfg.hz
        n_groups = max(1, round(period / SLOT_S))
        slot = period / n_groups
        groups: list[list[tuple[ClientConnection, list[int]]]] = [[] for _ in range(n_groups)]
        for i, (_npc, ws) in enumerate(self.bots):
            groups[i % n_groups].append((ws, [0]))
        await asyncio.sleep(max(0.0, go_at - time.time()))
        cpu0, wall0 = time.process_time(), time.monotonic()
        t0, enc, opcode = cfg.t0, cfg.encoding, self.opcode
        k = 0
        while True:
            due = go_at + k * slot
            if due >= end_at:
                break
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                st.pacer_lag_ms_max = max(st.pacer_lag_ms_max, -delay * 1000)
                if -delay > slot:
                    st.pacer_late_slots += 1
                if k % n_groups == 0:
                    await asyncio.sleep(0)  # behind: still let readers run once per period
            for ws, seq in groups[k % n_groups]:
                transport = ws.transport
                if transport.is_closing():
                    continue
                if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
                    st.send_skipped += 1
                    continue
                seq[0] += 1
                x = (time.time() - t0) * 1000
                transport.write(client_frame(pos_payload(enc, x, seq[0]), opcode))
                st.sent += 1
            k += 1
        st.pacer_slots = k
        # The last word of every bot: z = -1 marks it for the final_delivered check.
        for _npc, ws in self.bots:
            if not ws.transport.is_closing():
                x = (time.time() - t0) * 1000
                ws.transport.write(client_frame(pos_payload(enc, x, -1), opcode))
        st.cpu_s = time.process_time() - cpu0
        st.wall_s = time.monotonic() - wall0
        await asyncio.sleep(cfg.grace)
        # Every viewer sees every process's bots; only connected bots sent a -1.
        st.final_delivered = sum(1 for seen in self.last_seen for seq in seen.values() if seq == -1)

    async def close(self) -> None:
        conns = [ws for _npc, ws in self.bots] + self.viewers
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
        for ws in conns:
            ws.transport.abort()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _install_loop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def worker_main(
    index: int,
    cfg: Config,
    bots: list[tuple[str, str]],
    viewers: list[str],
    out: Any,
    go: Any,
    go_at: Any,
) -> None:
    """Entry point of one worker process: connect, report ready, run on `go`, report figures."""
    _install_loop()

    async def main() -> None:
        worker = Worker(cfg, bots, viewers)
        try:
            await worker.connect_all()
            out.put(("ready", index, None))
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
            # The load generator's own collections stalled it for up to 1.9 s at 2,000 bots
            # (its viewers' parsed frames reach the old generation), and a stalled generator
            # shows up as the server's latency. Nothing it makes while sending is cyclic
            # garbage worth collecting within a run.
            gc.collect()
            gc.freeze()
            gc.disable()
            try:
                await worker.run(go_at.value)
            finally:
                gc.enable()
        finally:
            await worker.close()
        st = worker.stats
        out.put(("result", index, st.__dict__))

    try:
        asyncio.run(main())
    except Exception as exc:
        out.put(("failed", index, repr(exc)))


# -- the coordinator -----------------------------------------------------------------------------
def issue_tokens(args: argparse.Namespace, role: str, subs: list[str]) -> list[str]:
    if args.secret:
        from gateway.auth import issue_token

        return [issue_token(args.secret, role, sub, 3600 * 4) for sub in subs]

    async def run_all() -> list[str]:
        sem = asyncio.Semaphore(8)

        async def one(sub: str) -> str:
            cmd = args.token_cmd.format(role=role, sub=sub)
            async with sem:
                proc = await asyncio.create_subprocess_exec(
                    *shlex.split(cmd), stdout=asyncio.subprocess.PIPE
                )
                stdout, _ = await proc.communicate()
            if proc.returncode:
                raise SystemExit(f"token command failed ({proc.returncode}): {cmd}")
            return stdout.decode().strip()

        return list(await asyncio.gather(*(one(s) for s in subs)))

    return asyncio.run(run_all())


def emit(args: argparse.Namespace, event: str, **fields: Any) -> None:
    if args.events:
        print(json.dumps({"event": event, **fields}), flush=True)
    else:
        print(f"loadgen: {event} {json.dumps(fields) if fields else ''}", file=sys.stderr)


def summarize(args: argparse.Namespace, results: list[dict[str, Any]], connect_s: float) -> dict:
    total: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    closes: Counter[str] = Counter()
    conn_errors: Counter[str] = Counter()
    hist: dict[int, int] = {}
    delivery: dict[int, int] = {}
    for r in results:
        for key in ("bots_connected", "viewers_connected", "connect_failures", "sent"):
            total[key] += r[key]
        for key in ("send_skipped", "frames", "frames_total", "applied", "out_of_order"):
            total[key] += r[key]
        total["final_delivered"] += r["final_delivered"]
        errors.update(r["errors_received"])
        closes.update(r["close_codes"])
        conn_errors.update(r["connect_errors"])
        for b, c in r["latency"].items():
            hist[b] = hist.get(b, 0) + c
        for b, c in r["delivery"].items():
            delivery[b] = delivery.get(b, 0) + c
    d = args.duration
    viewers = max(1, total["viewers_connected"])
    pairs = total["viewers_connected"] * total["bots_connected"]
    return {
        "url": args.url,
        "bots": args.bots,
        "hz": args.hz,
        "viewers": args.viewers,
        "duration_s": d,
        "encoding": args.encoding,
        "processes": args.processes,
        "connect": {
            "bots": total["bots_connected"],
            "viewers": total["viewers_connected"],
            "failures": total["connect_failures"],
            "failure_kinds": dict(conn_errors),
            "seconds": round(connect_s, 2),
        },
        "updates_sent_per_s": round(total["sent"] / d, 1),
        "updates_target_per_s": args.bots * args.hz,
        "send_skipped": total["send_skipped"],
        "updates_applied_per_s": round(total["applied"] / d, 1),
        "updates_applied_per_viewer_per_s": round(total["applied"] / d / viewers, 1),
        "frames_per_viewer_per_s": round(total["frames"] / d / viewers, 2),
        "latency_ms": hist_percentiles(hist),
        "delivery_ms": hist_percentiles(delivery),
        "final_delivered": round(total["final_delivered"] / pairs, 4) if pairs else None,
        "out_of_order": total["out_of_order"],
        "errors_received": dict(errors),
        "close_codes": dict(closes),
        "loadgen_cpu_percent": [
            round(100 * r["cpu_s"] / r["wall_s"], 1) if r["wall_s"] else None for r in results
        ],
        "pacer_lag_ms_max": round(max((r["pacer_lag_ms_max"] for r in results), default=0), 1),
        "pacer_late_share": round(
            sum(r["pacer_late_slots"] for r in results)
            / max(1, sum(r["pacer_slots"] for r in results)),
            4,
        ),
    }


def receive(out: Any, timeout: float, phase: str) -> tuple[str, int, Any]:
    try:
        item: tuple[str, int, Any] = out.get(timeout=timeout)
    except queue.Empty:
        raise SystemExit(f"loadgen: workers still {phase} after {timeout:.0f} s") from None
    return item


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="ws://127.0.0.1:8080", help="gateway root (ws://host:port)")
    auth = p.add_mutually_exclusive_group(required=True)
    auth.add_argument("--secret", help="token secret (GATEWAY_SECRET): tokens are made here")
    auth.add_argument(
        "--token-cmd",
        help="command printing one token, with {role} and {sub}, e.g. "
        "'python -m gateway token --role {role} --sub {sub}' (slow: one run per connection)",
    )
    p.add_argument("--bots", type=int, default=50)
    p.add_argument("--hz", type=float, default=10.0)
    p.add_argument("--viewers", type=int, default=5)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    p.add_argument("--encoding", choices=("json", "msgpack"), default="json")
    p.add_argument("--processes", type=int, default=1, help="worker processes to spread over")
    p.add_argument("--grace", type=float, default=2.0, help="seconds viewers keep reading after")
    p.add_argument("--idle", type=float, default=0.0, help="seconds to stay idle once connected")
    p.add_argument("--connect-timeout", type=float, default=120.0)
    p.add_argument("--prefix", default="lg", help="NPC id prefix")
    p.add_argument("--events", action="store_true", help="JSON lines: ready/go/stop/result")
    args = p.parse_args(argv)
    if args.bots < 0 or args.viewers < 0 or args.hz <= 0 or args.duration <= 0:
        p.error("bots/viewers must be >= 0, hz and duration > 0")
    if args.url.startswith("http"):
        args.url = "ws" + args.url[4:]

    npc_ids = [f"{args.prefix}{i:05d}" for i in range(args.bots)]
    bot_tokens = issue_tokens(args, "npc", npc_ids)
    viewer_tokens = issue_tokens(
        args, "viewer", [f"{args.prefix}-viewer{i}" for i in range(args.viewers)]
    )
    nproc = max(1, min(args.processes, max(args.bots, args.viewers, 1)))
    cfg = Config(args.url, args.encoding, args.hz, args.duration, args.grace, t0=time.time())

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    go = ctx.Event()
    go_at = ctx.Value("d", 0.0)
    bots = list(zip(npc_ids, bot_tokens, strict=True))
    procs = [
        ctx.Process(
            target=worker_main,
            args=(i, cfg, bots[i::nproc], viewer_tokens[i::nproc], out, go, go_at),
            daemon=True,
        )
        for i in range(nproc)
    ]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    try:
        ready = 0
        while ready < nproc:
            kind, index, payload = receive(out, args.connect_timeout, "connecting")
            if kind != "ready":
                raise SystemExit(f"worker {index} {kind}: {payload}")
            ready += 1
        connect_s = time.monotonic() - started
        emit(args, "ready", connect_s=round(connect_s, 2))
        time.sleep(args.idle)
        go_at.value = time.time() + 0.2
        go.set()
        emit(args, "go")
        time.sleep(max(0.0, go_at.value + args.duration - time.time()))
        emit(args, "stop")
        results: list[dict[str, Any]] = []
        while len(results) < nproc:
            kind, index, payload = receive(out, args.grace + 60, "finishing")
            if kind != "result":
                raise SystemExit(f"worker {index} {kind}: {payload}")
            results.append(payload)
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    summary = summarize(args, results, connect_s)
    failed = args.bots > 0 and summary["connect"]["bots"] == 0
    if args.events:
        print(json.dumps({"event": "result", **summary}), flush=True)
    else:
        print(json.dumps(summary, indent=2))
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
