"""`python -m gateway simulate`: the simulator's command line.

Apart from gateway/simulate.py so that declaring the subcommand imports nothing: the simulator
(aiohttp, numpy, the SDK) is loaded only when the subcommand runs.

    python -m gateway simulate --url ws://127.0.0.1:8080 --npcs 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from typing import Any


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `simulate` subcommand to `python -m gateway`'s subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate", help="run simulated bots against a gateway"
    )
    p.add_argument("--url", default="ws://127.0.0.1:8080", help="gateway WebSocket base URL")
    p.add_argument("--npcs", type=int, default=50, help="number of bots (default 50)")
    p.add_argument("--seed", type=int, default=1, help="terrain and behaviour seed")
    p.add_argument("--prefix", default="sim", help="NPC id prefix (default sim → sim-0001)")
    # None: the simulator's own TICK_HZ, read once it is imported.
    p.add_argument("--hz", type=float, default=None, help="steps per second per bot")
    p.add_argument("--nether", type=float, default=0.1, help="share of bots in the_nether")
    return p


def main(args: argparse.Namespace) -> int:
    """Run the simulator until SIGINT/SIGTERM. Tokens are minted with the same secret the
    server reads (`GATEWAY_SECRET`, or the secret file in `GATEWAY_DATA_DIR`)."""
    from gateway.config import ConfigError, Settings
    from gateway.simulate import TICK_HZ, run_simulation

    hz = TICK_HZ if args.hz is None else args.hz
    if args.npcs < 1 or hz <= 0:
        print("--npcs must be >= 1 and --hz > 0", file=sys.stderr)
        return 2
    try:
        secret = Settings.from_env().secret
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        started = time.monotonic()
        print(f"simulating {args.npcs} bots against {args.url}", flush=True)
        await run_simulation(
            args.url,
            secret,
            args.npcs,
            seed=args.seed,
            prefix=args.prefix,
            hz=hz,
            nether_share=args.nether,
            stop=stop,
        )
        print(f"simulator stopped after {time.monotonic() - started:.0f} s", flush=True)

    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0
