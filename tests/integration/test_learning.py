"""Task events teach learning profiles, exactly, even through two replicas at once."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from gateway.bus import MemoryBroker
from tests.harness import Rest, gateway_settings, running_gateway, token

EVENTS_PER_REPLICA = 40


async def _wait_applied(node, count: int) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while node.profiles.applied < count:
        assert loop.time() < deadline, f"only {node.profiles.applied}/{count} applied"
        await asyncio.sleep(0.02)


async def test_task_events_through_two_replicas_give_exact_counts(
    tmp_path: Path, pg_url: str
) -> None:
    broker = MemoryBroker()
    base = gateway_settings(tmp_path, database_url=pg_url)
    async with (
        running_gateway(dataclasses.replace(base, replica_id="a"), broker) as a,
        running_gateway(dataclasses.replace(base, replica_id="b"), broker) as b,
    ):
        # One NPC's outcomes arriving on two replicas at once (as during a failover): both
        # replicas' updaters race on the same profile row.
        await a.bot("learner")
        for i in range(EVENTS_PER_REPLICA):
            name = "task:completed" if i % 4 else "task:failed"
            data = {"task": "dig", "xp": 10, "skill": "mining"}
            a.node.accept_event("learner", name, data)
            b.node.accept_event("learner", name, data)
        await _wait_applied(a.node, EVENTS_PER_REPLICA)
        await _wait_applied(b.node, EVENTS_PER_REPLICA)
        rest = Rest(b.http, token("viewer", "v"))
        try:
            status, profile = await rest.call("GET", "/api/npcs/learner/profile")
        finally:
            await rest.close()
        assert status == 200
        failed = 2 * (EVENTS_PER_REPLICA // 4)
        assert profile["tasks"]["total"] == 2 * EVENTS_PER_REPLICA
        assert profile["tasks"]["failed"] == failed
        assert profile["skills"]["mining"]["succeeded"] == 2 * EVENTS_PER_REPLICA - failed
        assert profile["skills"]["mining"]["failed"] == failed
        assert profile["experience"] == 10 * (2 * EVENTS_PER_REPLICA - failed)


async def test_task_event_updates_profile_and_metrics(tmp_path: Path) -> None:
    async with running_gateway(gateway_settings(tmp_path)) as gw:
        viewer, _ = await gw.viewer()
        bot = await gw.bot("worker")
        rest = Rest(gw.http, token("admin", "ops"))
        try:
            assert await rest.call("GET", "/api/npcs/worker/profile") == (200, {})  # cached {}
            await bot.send(
                {
                    "type": "event",
                    "name": "task:completed",
                    "data": {"task": "build_house", "xp": 250, "skill": "building"},
                }
            )
            event = await viewer.recv_type("event")
            assert event["name"] == "task:completed" and event["npc"] == "worker"
            await _wait_applied(gw.node, 1)
            _, profile = await rest.call("GET", "/api/npcs/worker/profile")
            assert profile["tasks"] == {"total": 1, "succeeded": 1, "failed": 0, "successRate": 1.0}
            assert profile["level"] == 2 and profile["skills"]["building"]["experience"] == 250
            await bot.send({"type": "event", "name": "task:failed", "data": {"xp": "lots"}})
            assert (await bot.recv_type("error"))["code"] == "bad_message"
            assert gw.node.profiles.applied == 1
        finally:
            await rest.close()
