"""A viewer that stops reading never makes the gateway wait or grow, and is closed (§11)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.api.system import performance_figures
from tests.harness import gateway_settings, running_gateway
from tests.stuck_client import stuck_client

NPCS = 2000


async def test_stuck_viewer_is_bounded_and_closed_while_others_flow(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, tick_ms=20, viewer_stall_s=1.5)
    async with running_gateway(settings) as gw:
        node = gw.node
        healthy, _ = await gw.viewer("msgpack")
        _, stuck_writer = await stuck_client(gw.port, "viewer", "stuck")
        stuck = next(v for v in node.hub.viewers if v.encoding.name == "JSON")
        dim = "d" * 64  # fatter frames fill the socket buffers sooner

        async def feed() -> None:
            step = 0
            while True:
                step += 1
                for i in range(NPCS):
                    node.accept_position(
                        {
                            "id": f"npc{i}",
                            "x": float(step),
                            "y": 1.0,
                            "z": float(i),
                            "yaw": 0.0,
                            "pitch": 0.0,
                            "dim": dim,
                        }
                    )
                await asyncio.sleep(0.01)

        feeder = asyncio.create_task(feed())
        try:
            biggest_outbox = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not stuck.closed:
                assert loop.time() < deadline, "the stuck viewer was never closed"
                biggest_outbox = max(biggest_outbox, len(stuck._updates or ()))
                frame = await healthy.recv_type("positions")  # the healthy one keeps flowing
                assert len(frame["updates"]) == NPCS
            figures = performance_figures(node)["viewers"]
            assert stuck.closed and figures["closedSlow"] == 1
            assert figures["framesMerged"] > 0  # ticks merged into its one pending frame
            assert biggest_outbox <= NPCS  # bounded by the number of NPCs, not by time
            before = (await healthy.recv_type("positions"))["updates"][0]["x"]
            after = (await healthy.recv_type("positions"))["updates"][0]["x"]
            assert after > before
        finally:
            feeder.cancel()
            stuck_writer.close()
