"""Another replica's positions reach a viewer as one frame per cut, each NPC once.

A replica publishes one bus message per region per tick (an NPC that crossed a border goes to
both regions); the viewers of the replicas hearing them must not get one frame per region, nor
the border-crosser twice. Two in-process replicas on a shared memory bus, real sockets; windows
are cut by the test."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.bus import MemoryBroker
from gateway.bus.messages import PositionsWindow, encode
from gateway.regions import REGION_BLOCKS, region_channel
from tests.harness import Peer, gateway_settings, running_gateway

HOUR_MS = 3_600_000  # a tick that never fires by itself


async def move(bot: Peer, x: float) -> None:
    await bot.send({"type": "pos", "x": x, "y": 64, "z": 10})
    await bot.roundtrip()


async def next_frame_then_nothing(viewer: Peer) -> list[dict[str, object]]:
    """The next positions frame's updates; then a ping must be answered before any other
    frame (the server has handled all it heard before the ping)."""
    updates = (await viewer.recv_type("positions"))["updates"]
    await viewer.send({"type": "ping", "ref": "after"})
    following = await viewer.recv()
    assert following["type"] == "pong", following
    return updates


async def test_a_remote_cut_is_one_frame_with_each_npc_once(tmp_path: Path) -> None:
    broker = MemoryBroker()
    here = gateway_settings(tmp_path / "a", tick_ms=HOUR_MS)
    there = dataclasses.replace(here, data_dir=tmp_path / "b", replica_id="there")
    async with running_gateway(here, broker) as a, running_gateway(there, broker) as b:
        viewer, _ = await a.viewer()
        xs = {"west": 10.0, "middle": REGION_BLOCKS + 10.0, "east": 2 * REGION_BLOCKS + 10.0}
        bots = {npc: await b.bot(npc) for npc in xs}
        for npc, x in xs.items():
            await move(bots[npc], x)
        b.node.tick()  # three regions: three bus messages
        updates = await next_frame_then_nothing(viewer)
        assert sorted(u["id"] for u in updates) == ["east", "middle", "west"]

        await move(bots["west"], REGION_BLOCKS + 20.0)  # crosses into the middle region
        await move(bots["east"], 2 * REGION_BLOCKS + 11.0)
        b.node.tick()  # west goes to both the region it left and the one it entered
        updates = await next_frame_then_nothing(viewer)
        assert sorted(u["id"] for u in updates) == ["east", "west"]
        assert [u["x"] for u in updates if u["id"] == "west"] == [REGION_BLOCKS + 20.0]


async def test_a_replica_alone_on_its_bus_publishes_no_positions(tmp_path: Path) -> None:
    """One replica on the in-process bus: nobody can hear its windows, so none are encoded
    and sent (a second replica attached makes it publish again)."""
    broker = MemoryBroker()
    here = gateway_settings(tmp_path / "a", tick_ms=HOUR_MS)
    async with running_gateway(here, broker) as a:
        viewer, _ = await a.viewer()
        walker = await a.bot("walker")
        await move(walker, 10.0)
        a.node.tick()
        assert [u["id"] for u in await next_frame_then_nothing(viewer)] == ["walker"]
        assert a.node.windows_published == 0
        there = dataclasses.replace(here, data_dir=tmp_path / "b", replica_id="there")
        async with running_gateway(there, broker):
            await move(walker, 11.0)
            a.node.tick()
            await next_frame_then_nothing(viewer)
            assert a.node.windows_published == 1


async def test_a_window_that_trails_its_npcs_left_does_not_bring_it_back(tmp_path: Path) -> None:
    """On a Redis Cluster a replica's `left` (events channel) can overtake its last window of
    the bot (a region channel on another master). Such a window, cut no later than the
    `left` says, is dropped; a later cut (the bot back on that replica) is shown."""
    broker = MemoryBroker()
    here = gateway_settings(tmp_path / "a", tick_ms=HOUR_MS)
    there = dataclasses.replace(here, data_dir=tmp_path / "b", replica_id="there")
    async with running_gateway(here, broker) as a, running_gateway(there, broker) as b:
        viewer, _ = await a.viewer()
        walker = await b.bot("walker")
        await move(walker, 10.0)
        b.node.tick()
        assert [u["id"] for u in await next_frame_then_nothing(viewer)] == ["walker"]
        cut = b.node._live_ts["walker"]

        await walker.close()
        await viewer.recv_until(lambda m: m == {"type": "left", "id": "walker"})
        # The window of that cut arriving only now, as it could from another master.
        channel = region_channel("overworld", 10.0, 10.0)
        row = ("walker", 99.0, 64.0, 10.0, 0.0, 0.0, "overworld")
        b.node.bus.publish(channel, encode("there", PositionsWindow(ts=cut, rows=[row])))
        # A fence behind it on the same channel: a window of another bot, cut later.
        fence = ("fence", 11.0, 64.0, 10.0, 0.0, 0.0, "overworld")
        b.node.bus.publish(channel, encode("there", PositionsWindow(ts=cut + 1, rows=[fence])))
        assert [u["id"] for u in await next_frame_then_nothing(viewer)] == ["fence"]

        # The bot back on that replica: its new windows are newer than the leave, shown.
        b.node.bus.publish(channel, encode("there", PositionsWindow(ts=cut + 2, rows=[row])))
        updates = await next_frame_then_nothing(viewer)
        assert [(u["id"], u["x"]) for u in updates] == [("walker", 99.0)]
