"""Recovery through a real load balancer (§11): nginx over two real replica processes.

While a bot streams events, the replica a viewer is on is killed with SIGKILL. The viewer
reconnects through nginx to the survivor with `since` and ends with every event exactly once,
in order. A command queued for an offline bot reaches it when it comes back on the other
replica. Waits are event-driven or polls with deadlines.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest

from gateway.client import BotClient, ViewerClient
from gateway.testing.net import free_port
from gateway.testing.nginx import Nginx, find_nginx
from gateway.testing.postgres_server import PostgresServer
from tests.harness import Rest, token
from tests.integration.test_cluster import running_cluster, until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def test_a_viewer_and_a_bot_miss_nothing_when_their_replica_dies(
    pg_server: PostgresServer,
) -> None:
    if find_nginx() is None:
        pytest.skip("nginx is not installed (scripts/install-system-deps.sh does it)")
    with running_cluster(pg_server, 2) as cl, tempfile.TemporaryDirectory() as tmp:
        lb = Nginx([r.port for r in cl.replicas], free_port(), Path(tmp) / "nginx")
        lb.start()
        rest = Rest(lb.http, token("admin", "ops"))
        messages: list[dict[str, Any]] = []
        viewer = ViewerClient(
            lb.ws,
            token("viewer", "resumer"),
            on_message=messages.append,
            backoff_initial=0.1,
            backoff_max=0.5,
        )
        chatter: BotClient | None = None
        courier: BotClient | None = None
        stop = asyncio.Event()
        try:
            await viewer.start()
            assert viewer.welcome is not None
            victim = next(r for r in cl.replicas if r.name == viewer.welcome["replica"])
            survivor = next(r for r in cl.replicas if r is not victim)
            # The courier is registered on the victim, then goes offline.
            courier = BotClient(victim.ws, token("npc", "courier"))
            await courier.start()
            await courier.close()
            # The chatter lives on the survivor and streams events throughout.
            chatter = BotClient(survivor.ws, token("npc", "chatter"))
            await chatter.start()
            sent = 0

            async def stream() -> None:
                nonlocal sent
                while not stop.is_set():
                    await chatter.send_event("tick", {"i": sent})
                    sent += 1
                    if sent % 5 == 0:
                        await asyncio.sleep(0.02)  # ~200 events/s, steady

            producer = asyncio.create_task(stream())

            def ticks() -> list[dict[str, Any]]:
                return [m for m in messages if m["type"] == "event" and m["name"] == "tick"]

            await until(lambda: len(ticks()) >= 50, "the viewer to see the stream", cluster=cl)
            status, body = await rest.call("POST", "/api/npcs/courier/commands", {"action": "go"})
            assert status == 202 and body["queued"] is True, body
            queued_id = body["id"]

            victim.kill()  # SIGKILL while events stream: no close frame reaches the viewer

            def resumed() -> bool:
                return (
                    viewer.connected
                    and viewer.welcome is not None
                    and viewer.welcome["replica"] == survivor.name
                    and viewer.recoveries["ok"] >= 1
                )

            await until(resumed, "the viewer to resume on the survivor", 30.0, cluster=cl)
            mark = len(ticks())
            await until(lambda: len(ticks()) >= mark + 50, "live events after", cluster=cl)
            stop.set()
            await producer
            await chatter.send_event("fence", {})
            await until(
                lambda: any(m["type"] == "event" and m["name"] == "fence" for m in messages),
                "the fence event",
                cluster=cl,
            )

            # Every event exactly once, in order, across the kill.
            events = [m for m in messages if m["type"] == "event"]
            seqs = [m["seq"] for m in events]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            assert len({m["epoch"] for m in events}) == 1
            got = [m["data"]["i"] for m in ticks()]
            assert got == list(range(got[0], sent))
            assert viewer.recoveries == {"ok": 1, "failed": 0}
            assert any(m["type"] == "recovered" and m["count"] > 0 for m in messages)

            # The courier comes back through nginx, necessarily to the survivor.
            received: list[dict[str, Any]] = []
            courier = BotClient(lb.ws, token("npc", "courier"), on_command=received.append)
            await courier.start()
            assert courier.welcome is not None and courier.welcome["replica"] == survivor.name
            await until(lambda: bool(received), "the queued command", cluster=cl)

            async def acked() -> bool:
                status, record = await rest.call("GET", f"/api/commands/{queued_id}")
                return status == 200 and record["status"] == "acked"

            await until(acked, "the queued command acked", cluster=cl)
            assert [c["id"] for c in received] == [queued_id]
        finally:
            stop.set()
            for client in (chatter, courier, viewer):
                if client is not None:
                    await client.close()
            await rest.close()
            lb.stop()
