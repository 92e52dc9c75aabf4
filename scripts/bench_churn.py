"""Memory under connection churn: RSS of a real `python -m gateway serve` while waves of bots
connect, move for a while (long enough for their objects to be promoted to the oldest GC
generation, as a real session's are) and disconnect, with the periodic full collection on (the
default) and off.

    python scripts/bench_churn.py                      # 7 waves of 2,000 (14,000 connects)
    python scripts/bench_churn.py --churn 4000 --wave 1000 --idle 200
    python scripts/bench_churn.py --churn 6000 --hold 60   # sessions old enough to be promoted

The gateway runs on embedded SQLite in a temp dir, with the GC thresholds `serve` sets. RSS is
read from /proc/PID/status (VmRSS) of the gateway process. Figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

from gateway.auth import issue_token
from gateway.testing.gateway_process import GatewayProcess

PARALLEL = 100  # connections opened at once
HOLD_S = 8.0  # each wave's bots stay this long by default, sending a position a second


def gc_stats(http: str, secret: str) -> dict[str, float]:
    """The replica's own account of its periodic full collections (/api/performance)."""
    request = urllib.request.Request(
        f"{http}/api/performance",
        headers={"Authorization": f"Bearer {issue_token(secret, 'admin', 'bench')}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return orjson.loads(response.read())["process"]["gc"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def one_bot(
    ws_url: str,
    secret: str,
    npc: str,
    hold: asyncio.Event | None,
    hold_s: float = HOLD_S,
    moves: int = 1,
) -> None:
    headers = {"Authorization": f"Bearer {issue_token(secret, 'npc', npc)}"}
    async with connect(ws_url + "/ws/npc", additional_headers=headers, compression=None) as ws:
        await ws.recv()  # welcome
        for step in range(moves):
            if step:
                await asyncio.sleep(hold_s / moves)
            await ws.send(orjson.dumps({"type": "pos", "x": step, "y": 64, "z": 2}).decode())
        await ws.send(orjson.dumps({"type": "ping", "ref": 1}).decode())
        while orjson.loads(await ws.recv()).get("type") != "pong":
            pass
        if hold is not None:
            await hold.wait()


async def run(churn: int, wave: int, idle: int, hold_s: float, gc_every: int) -> dict[str, float]:
    secret = secrets.token_urlsafe(48)
    data = Path(tempfile.mkdtemp(prefix="aicraft-churn-"))
    proc = GatewayProcess(
        {
            "GATEWAY_SECRET": secret,
            "GATEWAY_DATA_DIR": str(data),
            "GATEWAY_WORKERS": "1",
            "GATEWAY_GC_FULL_EVERY_S": str(gc_every),
            "GATEWAY_LOG_LEVEL": "WARNING",
        }
    )
    proc.start()
    assert proc.proc is not None
    pid = proc.proc.pid
    try:
        hold = asyncio.Event()
        held = [
            asyncio.create_task(one_bot(proc.ws, secret, f"idle-{i}", hold)) for i in range(idle)
        ]
        await asyncio.sleep(5)
        figures = {"idle bots connected": rss_mb(pid)}
        peak = 0.0
        sem = asyncio.Semaphore(PARALLEL)

        async def churned(i: int) -> None:
            async with sem:
                pass  # paces the connects only; the bots then run side by side
            await one_bot(proc.ws, secret, f"churn-{i}", None, hold_s, moves=int(hold_s))

        started = time.monotonic()
        for first in range(0, churn, wave):
            tasks = [
                asyncio.create_task(churned(i)) for i in range(first, min(churn, first + wave))
            ]
            while not all(t.done() for t in tasks):
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.5)
            await asyncio.gather(*tasks, return_exceptions=True)
            figures[f"after {min(churn, first + wave):,} connects"] = rss_mb(pid)
        figures["peak during churn"] = peak
        figures["churn seconds"] = time.monotonic() - started
        await asyncio.sleep(max(gc_every, 1) + 5)
        figures[f"{max(gc_every, 1) + 5} s later"] = rss_mb(pid)
        gc_figures = gc_stats(proc.http, secret)
        figures["full collections"] = gc_figures["fullCollections"]
        figures["last full pause ms"] = gc_figures["lastFullPauseMs"]
        hold.set()
        await asyncio.gather(*held, return_exceptions=True)
    finally:
        proc.terminate()
    return figures


async def main_async(churn: int, wave: int, idle: int, hold_s: float) -> None:
    print(f"{churn:,} bot connects in waves of {wave:,} (each bot moves for {hold_s:.0f} s),")
    print(f"with {idle:,} idle bots held throughout")
    print("(RSS of the gateway process, MB)\n")
    for label, every in (
        ("full collection every 30 s (default)", 30),
        ("no periodic full collection", 0),
    ):
        figures = await run(churn, wave, idle, hold_s, every)
        print(label)
        for key, value in figures.items():
            print(f"  {key:32} {value:8.1f}")
        print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--churn", type=int, default=14_000)
    parser.add_argument("--wave", type=int, default=2_000)
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--hold", type=float, default=HOLD_S, help="seconds each bot stays")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main_async(args.churn, args.wave, args.idle, args.hold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
