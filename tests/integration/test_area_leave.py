"""Leaving an area filter (§11): a viewer whose filter covered an NPC gets the NPC's
first outside position once, then nothing of it until it is inside again. Real gateways on
real ports, raw WebSocket clients; windows are cut by the test (`node.tick()`)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.bus import MemoryBroker
from tests.harness import Peer, RunningGateway, gateway_settings, running_gateway

HOUR_MS = 3_600_000  # a tick that never fires by itself
AREA = [0, 0, 100, 100]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gateway_settings(tmp_path, tick_ms=HOUR_MS)) as running:
        yield running


async def move(bot: Peer, x: float, dim: str = "overworld") -> None:
    await bot.send({"type": "pos", "x": x, "y": 64, "z": 10, "dim": dim})
    await bot.roundtrip()


async def frame(viewer: Peer) -> dict[str, dict[str, Any]]:
    msg = await viewer.recv_type("positions")
    return {u["id"]: u for u in msg["updates"]}


async def test_leaving_npc_is_sent_once_then_omitted(gw: RunningGateway) -> None:
    viewer, _ = await gw.viewer()
    await viewer.send({"type": "subscribe", "dim": "overworld", "area": AREA})
    await viewer.recv_type("snapshot")
    walker, marker = await gw.bot("walker"), await gw.bot("marker")

    await move(walker, 10)
    await move(marker, 50)
    gw.node.tick()
    assert set(await frame(viewer)) == {"walker", "marker"}

    await move(walker, 500)  # leaves the area
    await move(marker, 51)
    gw.node.tick()
    got = await frame(viewer)
    assert set(got) == {"walker", "marker"} and got["walker"]["x"] == 500

    await move(walker, 600)  # still outside: omitted
    await move(marker, 52)
    gw.node.tick()
    assert set(await frame(viewer)) == {"marker"}

    await move(walker, 20)  # back inside: sent again
    gw.node.tick()
    assert (await frame(viewer))["walker"]["x"] == 20

    await move(walker, 20, dim="the_nether")  # another dimension is outside too
    await move(marker, 53)
    gw.node.tick()
    got = await frame(viewer)
    assert got["walker"]["dim"] == "the_nether"
    await move(walker, 21, dim="the_nether")
    await move(marker, 54)
    gw.node.tick()
    assert set(await frame(viewer)) == {"marker"}


async def test_leaving_npc_of_another_replica_is_sent_once(tmp_path: Path) -> None:
    broker = MemoryBroker()
    base = gateway_settings(tmp_path / "a", tick_ms=HOUR_MS)
    other = dataclasses.replace(base, data_dir=tmp_path / "b", replica_id="r2")
    async with (
        running_gateway(base, broker) as a,
        running_gateway(other, broker) as b,
    ):
        viewer, _ = await a.viewer()
        await viewer.send({"type": "subscribe", "dim": "overworld", "area": AREA})
        await viewer.recv_type("snapshot")
        walker = await b.bot("far-walker")
        await move(walker, 10)
        b.node.tick()
        assert (await frame(viewer))["far-walker"]["x"] == 10
        await move(walker, 900)
        b.node.tick()
        assert (await frame(viewer))["far-walker"]["x"] == 900


async def test_sdk_viewer_drops_an_npc_that_left_its_area(gw: RunningGateway) -> None:
    from gateway.client import ViewerClient
    from tests.harness import token

    async with ViewerClient(gw.ws, token("viewer", "sdk")) as viewer:
        await viewer.subscribe(dim="overworld", area=AREA)
        walker = await gw.bot("sdk-walker")
        await move(walker, 10)
        gw.node.tick()
        await viewer.wait_for_npc("sdk-walker", x=10)
        await move(walker, 700)
        gw.node.tick()
        await viewer.wait_for(lambda npcs: "sdk-walker" not in npcs)
