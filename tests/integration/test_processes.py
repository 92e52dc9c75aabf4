"""`serve --processes N` (docs/scaling.md): N replicas on one port, joined through a real Redis.

The kernel spreads connections over the children (SO_REUSEPORT); a bot on one child is seen
by a viewer on another, and SIGTERM to the parent drains every child before it exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.client import BotClient, ViewerClient
from gateway.testing.gateway_process import replica_env
from gateway.testing.net import free_port, http_status
from tests.harness import REPO, SECRET, token

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WAIT_S = 30.0


def _serve(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_more_than_one_process_needs_redis(tmp_path: Path) -> None:
    env = {**os.environ, "GATEWAY_DATA_DIR": str(tmp_path)}
    env.pop("GATEWAY_REDIS_URL", None)
    for args, extra in ((["--processes", "2"], {}), ([], {"GATEWAY_PROCESSES": "2"})):
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--port", "1", *args],
            cwd=REPO,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "needs GATEWAY_REDIS_URL" in done.stderr
    zero = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--processes", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert zero.returncode == 2 and "--processes must be 1-" in zero.stderr


async def test_two_processes_share_one_port_and_drain_on_sigterm(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    port = free_port()
    env = replica_env(
        name="box",
        secret=SECRET,
        database_url=pg_url,
        redis_url=redis_url,
        data_dir=tmp_path,
        tick_ms=100,
    )
    log = tmp_path / "box.log"
    parent = _serve(["--processes", "2", "--port", str(port)], env, log)
    url = f"ws://127.0.0.1:{port}"
    bots: dict[str, tuple[str, BotClient]] = {}  # replica -> (npc, a bot connected to it)
    viewer: ViewerClient | None = None
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + WAIT_S
        while http_status(f"http://127.0.0.1:{port}/api/health") != 200:
            assert parent.poll() is None, log.read_text()
            assert loop.time() < end, "the box did not become healthy"
            await asyncio.sleep(0.1)
        # New connections land on either child: connect until a bot sits on each.
        n = 0
        while len(bots) < 2:
            assert loop.time() < end + WAIT_S, f"every bot landed on {list(bots)}"
            n += 1
            bot = BotClient(url, token("npc", f"proc-{n}"))
            await bot.start()
            assert bot.welcome is not None
            replica = bot.welcome["replica"]
            if replica in bots:
                await bot.close()
            else:
                bots[replica] = (f"proc-{n}", bot)
        assert sorted(bots) == ["box-0", "box-1"]
        # A viewer on one child sees the bot held by the other: they are joined through Redis.
        viewer = ViewerClient(url, token("viewer", "proc-view"))
        await viewer.start()
        for x, (_, bot) in enumerate(bots.values()):
            await bot.send_position(10 + x, 64, 0, dim="overworld")
        for x, (npc, _) in enumerate(bots.values()):
            await viewer.wait_for_npc(npc, WAIT_S, x=10 + x)

        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=WAIT_S) == 0, log.read_text()[-3000:]
        # Each child drained (closed its sockets, wrote its window) and said so.
        assert log.read_text().count('"stopped"') == 2, log.read_text()[-3000:]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if viewer is not None:
            await viewer.close()
        for _, bot in bots.values():
            await bot.close()
