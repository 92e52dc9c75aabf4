"""Through a real load balancer: nginx (gateway/testing/nginx.conf.template) over 3 replicas.

Bots and a viewer connect through nginx with the SDK; the replica holding some bots is killed
with SIGKILL; those bots reconnect by themselves, nginx sends them to the survivors, and the
viewer sees them again, online and moving. Waits are event-driven or polls with deadlines.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.client import BotClient, ViewerClient
from gateway.testing.net import free_port
from gateway.testing.nginx import Nginx, find_nginx
from gateway.testing.postgres_server import PostgresServer
from tests.harness import Rest, token
from tests.integration.test_cluster import WAIT_S, running_cluster, until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

BOTS = 9


def all_online_at(ids: list[str], x: float) -> Callable[[dict[str, Any]], bool]:
    """A viewer's check: every one of `ids` is online and at `x`."""
    return lambda npcs: all(npcs.get(n, {}).get("x") == x and npcs[n].get("online") for n in ids)


async def test_bots_fail_over_through_nginx(pg_server: PostgresServer) -> None:
    if find_nginx() is None:
        pytest.skip(
            "nginx is not installed (apt-get install -y nginx-light; "
            "scripts/install-system-deps.sh does it for `make test`)"
        )
    with running_cluster(pg_server, 3) as cl, tempfile.TemporaryDirectory() as tmp:
        lb = Nginx([r.port for r in cl.replicas], free_port(), Path(tmp) / "nginx")
        lb.start()
        rest = Rest(lb.http, token("admin", "ops"))
        messages: list[dict[str, Any]] = []
        viewer = ViewerClient(lb.ws, token("viewer", "lb-viewer"), on_message=messages.append)
        ids = [f"lb-bot-{i}" for i in range(BOTS)]
        fleet = {
            npc: BotClient(lb.ws, token("npc", npc), backoff_initial=0.1, backoff_max=1.0)
            for npc in ids
        }
        try:
            await viewer.start()
            await until(lambda: any(m["type"] == "snapshot" for m in messages), "the snapshot")
            await asyncio.gather(*(bot.start() for bot in fleet.values()))
            for bot in fleet.values():
                await bot.send_position(1, 64, 0)
            await viewer.wait_for(all_online_at(ids, 1), WAIT_S)
            # least_conn spread the sockets over the replicas.
            placed = {npc: bot.welcome["replica"] for npc, bot in fleet.items() if bot.welcome}
            spread = Counter(placed.values())
            assert len(spread) == 3, spread
            assert viewer.welcome is not None
            # The victim: a replica with bots but not the viewer (it must watch the failover).
            victim = next(r for r in cl.replicas if r.name != viewer.welcome["replica"])
            moved = [npc for npc, name in placed.items() if name == victim.name]
            assert moved, spread

            victim.kill()  # SIGKILL: no close frames, no `left`, presence keys left behind

            for npc in moved:
                bot = fleet[npc]

                async def moved_on(bot: BotClient = bot) -> bool:
                    return (
                        bot.connected
                        and bot.welcome is not None
                        and bot.welcome["replica"] != victim.name
                    )

                await until(moved_on, f"{npc} to reconnect through nginx", 30.0, cluster=cl)
                assert bot.reconnects >= 1
            # Everyone moves again: the survivors carry the whole fleet.
            for bot in fleet.values():
                await bot.send_position(2, 64, 0)
            await viewer.wait_for(all_online_at(ids, 2), WAIT_S)
            for npc in moved:  # joined at the start, and again from the replica that took it
                assert [m["type"] for m in messages if m.get("id") == npc].count("joined") >= 2
            for npc in ids:  # REST through nginx agrees: presence now names a survivor
                status, body = await rest.call("GET", f"/api/npcs/{npc}")
                assert status == 200 and body["online"] is True and body["x"] == 2, body
            status, health = await rest.call("GET", "/api/health")
            assert status == 200 and health["replica"] != victim.name
        finally:
            await asyncio.gather(*(bot.close() for bot in fleet.values()))
            await viewer.close()
            await rest.close()
            lb.stop()
