"""Memory under churn: with the GC thresholds `serve` sets (young collections rare, full ones
rarer still), the cycles a closed connection leaves behind must not pile up until a full
collection that may be hours away. An in-process gateway on a real port, real sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.__main__ import tune_gc
from gateway.bot_session import BotSession
from tests.harness import gateway_settings, running_gateway

CHURN = 150  # bot connections opened and closed


@pytest.fixture
def serve_gc() -> Iterator[None]:
    """The collector as `serve` configures it; the test process's own settings afterwards."""
    thresholds = gc.get_threshold()
    tune_gc()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def live_sessions() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is BotSession)


async def test_closed_sessions_are_collected_without_waiting_for_a_full_gc(
    serve_gc: None, tmp_path: Path
) -> None:
    settings = dataclasses.replace(gateway_settings(tmp_path), gc_full_every_s=0.5)
    async with running_gateway(settings) as gw:
        for i in range(CHURN):
            bot = await gw.bot(f"churn-{i}")
            await bot.close()
        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        while live_sessions() > 5:
            assert loop.time() < end, f"{live_sessions()} closed sessions still in memory"
            await asyncio.sleep(0.1)
        perf = gw.node.gc_stats()
        assert perf["fullCollections"] >= 1
