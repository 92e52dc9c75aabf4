"""`serve --processes N`: N replicas of one box on one port (docs/scaling.md).

The parent starts N `serve` children that all bind the port with SO_REUSEPORT (the kernel
spreads new connections over them) and join each other through Redis like replicas on
different machines. The parent forwards SIGTERM/SIGINT to every child and waits for each to
drain; its exit code is the worst of theirs. It serves nothing itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from types import FrameType

from gateway.config import ConfigError

MAX_PROCESSES = 64
DRAIN_WAIT_S = 30.0  # a child still running this long after SIGTERM is killed


def check_processes(n: int, redis_url: str | None) -> None:
    """A ConfigError saying why `n` processes cannot run with this configuration."""
    if not 1 <= n <= MAX_PROCESSES:
        raise ConfigError(f"--processes must be 1-{MAX_PROCESSES}, got {n}")
    if n > 1 and not redis_url:
        raise ConfigError(
            f"--processes {n} needs GATEWAY_REDIS_URL: the processes are replicas that share"
            " viewers, presence and commands through Redis"
        )


def processes_from_env(env: Mapping[str, str], given: int | None) -> int:
    """`--processes` if given, else GATEWAY_PROCESSES, else 1."""
    if given is not None:
        return given
    raw = env.get("GATEWAY_PROCESSES") or "1"
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"GATEWAY_PROCESSES must be an integer, got {raw!r}") from None


def child_env(env: Mapping[str, str], index: int) -> dict[str, str]:
    out = dict(env)
    out["GATEWAY_PROCESSES"] = "1"
    base = env.get("GATEWAY_REPLICA_ID")
    if base:  # else each child names itself host-pid, distinct already
        out["GATEWAY_REPLICA_ID"] = f"{base}-{index}"
    return out


def run_processes(n: int, host: str, port: int) -> int:
    """Run n children on host:port until SIGTERM/SIGINT; return the worst exit code."""
    command = [sys.executable, "-m", "gateway", "serve", "--reuse-port"]
    command += ["--host", host, "--port", str(port)]
    children = [subprocess.Popen(command, env=child_env(os.environ, i)) for i in range(n)]
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # Until told to stop, or until every child has gone (a crashed child is not restarted:
    # the supervisor that restarts the box decides).
    while not stopping and any(c.poll() is None for c in children):
        time.sleep(0.2)
    deadline = time.monotonic() + DRAIN_WAIT_S
    codes = []
    for child in children:
        try:
            codes.append(child.wait(timeout=max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            child.kill()
            codes.append(child.wait())
    return max((abs(c) for c in codes), default=0)
