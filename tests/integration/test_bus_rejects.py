"""A bus payload that is not a message is counted and dropped; the replica goes on (in-process
gateway, another "replica" played by a bare bus on the same broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.bus import MemoryBroker, MemoryBus
from gateway.bus.base import EVENTS
from gateway.bus.messages import Status, encode
from tests.harness import RunningGateway, gateway_settings, running_gateway


@pytest.fixture
async def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
async def gw(tmp_path: Path, broker: MemoryBroker) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gateway_settings(tmp_path), broker) as running:
        yield running


async def test_a_bad_payload_is_counted_and_the_next_message_applied(
    gw: RunningGateway, broker: MemoryBroker
) -> None:
    other = MemoryBus(broker)
    await other.start("other", lambda channel, payload: None)
    try:
        viewer, _ = await gw.viewer()
        other.publish(EVENTS, b"\x93not a message")
        other.publish(EVENTS, encode("other", Status(npc="n1", status="mining")))
        status = await viewer.recv_type("status")
        assert (status["id"], status["status"]) == ("n1", "mining")
        assert gw.node.region_stats()["rejected"] == 1
    finally:
        await other.close()
