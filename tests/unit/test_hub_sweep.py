"""The idle sweep pings quiet bots and closes silent ones (bots have no aiohttp heartbeat)."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.core.hub import Hub


class FakeBot:
    """Stands in for a bot session: records what the sweep asked of it."""

    def __init__(self, npc_id: str, last_seen: float) -> None:
        self.npc_id = npc_id
        self.last_seen = last_seen
        self.replaced = False
        self.announce_left = True
        self.pinged = 0
        self.closed_with: int | None = None

    def send_message(self, message: dict[str, Any]) -> bool:
        return True

    def ping(self) -> None:
        self.pinged += 1

    async def close(self, code: int, message: str) -> None:
        self.closed_with = code


async def test_quiet_bots_are_pinged_and_silent_ones_closed() -> None:
    hub = Hub()
    lively, quiet, silent = FakeBot("a", 95.0), FakeBot("b", 65.0), FakeBot("c", 30.0)
    for bot in (lively, quiet, silent):
        hub.attach_bot(bot)
    assert hub.sweep_idle_bots(30.0, now=100.0) == 1
    await asyncio.sleep(0)
    assert (lively.pinged, quiet.pinged, silent.pinged) == (0, 1, 0)
    assert silent.closed_with is not None and quiet.closed_with is None
