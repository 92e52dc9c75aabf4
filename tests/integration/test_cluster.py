"""Scale-out (issue 3): real replica processes on one PostgreSQL and one Redis.

Three `python -m gateway serve` processes share a throwaway PostgreSQL database and a throwaway
Redis. Bots and viewers use the SDK (gateway.client) over real sockets. The module-scoped
cluster serves the tests that kill nothing (each uses its own NPC ids); tests that SIGKILL a
replica or stop Redis start their own. Every wait is event-driven (the SDK's `wait_for*`) or a
poll with a deadline; deadlines turn a hang into a failure and measure nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.client import BotClient, ViewerClient
from gateway.testing.gateway_process import GatewayProcess, start_replicas
from gateway.testing.net import free_port
from gateway.testing.postgres_server import PostgresServer
from gateway.testing.redis_server import RedisServer
from tests import wait
from tests.harness import SECRET, Rest, token

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WAIT_S = 15.0  # deadline for one event-driven wait (generous: the machine is shared)
PRESENCE_TTL_S = 15.0  # gateway.presence.redis.RedisPresence default
REPLICA_ENV = {
    "GATEWAY_TICK_MS": "100",
    "GATEWAY_METRICS_FLUSH_MS": "200",
    "GATEWAY_WORKERS": "1",
    # The tests send bursts; flood control has its own tests with the real limits.
    "GATEWAY_RATE_PER_S": "5000",
    "GATEWAY_RATE_BURST": "5000",
}


# -- the cluster ----------------------------------------------------------------------------------
@dataclass
class Cluster:
    replicas: list[GatewayProcess]
    redis: RedisServer
    work: Path
    _rests: dict[str, Rest] = field(default_factory=dict)

    def __getitem__(self, index: int) -> GatewayProcess:
        return self.replicas[index]

    def logs(self, chars: int = 1500) -> str:
        out = []
        for r in self.replicas:
            with contextlib.suppress(OSError):
                out.append(f"--- {r.name} ---\n{r.log_path.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)


@contextlib.contextmanager
def running_cluster(pg: PostgresServer, n: int) -> Iterator[Cluster]:
    work = Path(tempfile.mkdtemp(prefix="aicraft-cluster-test-"))
    redis = RedisServer()
    redis.start()
    replicas: list[GatewayProcess] = []
    try:
        db_url = pg.create_database(f"cluster_{uuid.uuid4().hex[:12]}")
        replicas = start_replicas(
            [free_port() for _ in range(n)],
            secret=SECRET,
            database_url=db_url,
            redis_url=redis.url,
            work_dir=work,
            names=[f"rep-{chr(ord('a') + i)}" for i in range(n)],
            extra_env=REPLICA_ENV,
        )
        yield Cluster(replicas, redis, work)
    finally:
        for replica in replicas:
            if replica.alive and replica.proc is not None:
                replica.proc.terminate()  # drain them all at once, then reap
        for replica in replicas:
            replica.terminate()
        redis.close()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(pg_server: PostgresServer) -> Iterator[Cluster]:
    """Three replicas shared by the tests of this module that kill nothing."""
    with running_cluster(pg_server, 3) as running:
        yield running


@pytest.fixture
async def rest(cluster: Cluster) -> AsyncIterator[list[Rest]]:
    """An admin REST client per replica of the shared cluster."""
    clients = [Rest(r.http, token("admin", "ops")) for r in cluster.replicas]
    yield clients
    for client in clients:
        await client.close()


_ids = itertools.count(1)


def npc_ids(prefix: str, n: int) -> list[str]:
    """Fresh NPC ids: the shared cluster's database outlives each test."""
    run = next(_ids)
    return [f"{prefix}-{run}-{i}" for i in range(n)]


# -- waiting --------------------------------------------------------------------------------------
async def until(
    check: Callable[[], Awaitable[bool] | bool],
    what: str,
    deadline_s: float = WAIT_S,
    cluster: Cluster | None = None,
) -> None:
    """Poll `check` (sync or async) until it holds; a failure shows the cluster's logs."""
    details = cluster.logs if cluster else None
    await wait.until(check, what, deadline_s, interval_s=0.05, details=details)


class Watcher:
    """A ViewerClient plus every message it received, in order (from its first connection)."""

    def __init__(self, replica: GatewayProcess) -> None:
        self.replica = replica.name
        self.messages: list[dict[str, Any]] = []
        self.client = ViewerClient(
            replica.ws, token("viewer", f"watch-{replica.name}"), on_message=self.messages.append
        )

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def events(self, npc: str) -> list[str]:
        return [m["name"] for m in self.of_type("event") if m["npc"] == npc]

    def presence_changes(self, npc: str) -> list[str]:
        return [
            m["type"] for m in self.messages if m["type"] in ("joined", "left") and m["id"] == npc
        ]

    def positions_of(self, npc: str) -> list[dict[str, Any]]:
        return [u for m in self.of_type("positions") for u in m["updates"] if u["id"] == npc]


@contextlib.asynccontextmanager
async def watchers(replicas: list[GatewayProcess]) -> AsyncIterator[list[Watcher]]:
    made = [Watcher(r) for r in replicas]
    try:
        await asyncio.gather(*(w.client.start() for w in made))
        for w in made:  # the snapshot first: later messages are what the test makes happen
            await until(lambda w=w: bool(w.of_type("snapshot")), f"snapshot on {w.replica}")
        yield made
    finally:
        await asyncio.gather(*(w.client.close() for w in made))


@contextlib.asynccontextmanager
async def bots(
    placement: list[tuple[str, GatewayProcess]], **options: Any
) -> AsyncIterator[dict[str, BotClient]]:
    made = {npc: BotClient(r.ws, token("npc", npc), **options) for npc, r in placement}
    try:
        await asyncio.gather(*(b.start() for b in made.values()))
        yield made
    finally:
        await asyncio.gather(*(b.close() for b in made.values()))


def has_position(npc: str, x: float) -> Callable[[dict[str, dict[str, Any]]], bool]:
    return lambda npcs: npcs.get(npc, {}).get("x") == x


# -- the shared cluster ---------------------------------------------------------------------------
async def test_viewers_on_every_replica_see_every_bot(cluster: Cluster) -> None:
    ids = npc_ids("spread", 6)
    placement = [(npc, cluster[i % 3]) for i, npc in enumerate(ids)]
    async with watchers(cluster.replicas) as views:
        async with bots(placement) as fleet:
            for i, bot in enumerate(fleet.values()):
                assert bot.welcome is not None and bot.welcome["replica"] == placement[i][1].name
                await bot.send_status(f"mining-{i}")
                await bot.send_position(100 + i, 64, -i, yaw=90, pitch=-10, dim="overworld")
                await bot.send_event("task:started", {"n": i})
            numbered: set[tuple[str, int]] = set()
            for view in views:
                for i, npc in enumerate(ids):
                    got = await view.client.wait_for_npc(
                        npc, WAIT_S, x=100 + i, z=-i, status=f"mining-{i}", online=True
                    )
                    assert (got["y"], got["yaw"], got["pitch"], got["dim"]) == (
                        64,
                        90,
                        -10,
                        "overworld",
                    ), view.replica
                await until(
                    lambda v=view: all(v.events(n) == ["task:started"] for n in ids),
                    f"events at the viewer on {view.replica}",
                    cluster=cluster,
                )
                for npc in ids:
                    assert view.presence_changes(npc) == ["joined"], (view.replica, npc)
                event = dict(next(m for m in view.of_type("event") if m["npc"] == ids[1]))
                numbered.add((event.pop("epoch"), event.pop("seq")))
                assert event == {
                    "type": "event",
                    "npc": ids[1],
                    "name": "task:started",
                    "data": {"n": 1},
                }
            # One numbering for the cluster (§11): the same event has the same seq everywhere.
            assert len(numbered) == 1
        # Every bot hung up: every replica's viewers see every `left`.
        for view in views:
            for npc in ids:
                await view.client.wait_for_npc(npc, WAIT_S, online=False)
                assert view.presence_changes(npc) == ["joined", "left"], (view.replica, npc)


async def test_order_and_coalescing_across_replicas(cluster: Cluster) -> None:
    """Positions of one NPC never go backwards at any viewer; an NPC at most once per frame."""
    ids = npc_ids("order", 3)
    placement = [(npc, cluster[0]) for npc in ids]  # all bots on A; viewers on A, B and C
    steps, per_step = 15, 20
    async with watchers(cluster.replicas) as views, bots(placement) as fleet:
        far = views[2].client
        x = 0
        for _ in range(steps):
            for _ in range(per_step):  # a burst: several updates per NPC inside one window
                x += 1
                for bot in fleet.values():
                    await bot.send_position(x, 64, 0)
            # Let the window go out before the next burst, so the run spans many frames.
            await far.wait_for(lambda npcs, x=x: all(npcs.get(n, {}).get("x") == x for n in ids))
        for view in views:
            # The last position of every bot reaches every replica's viewers.
            await view.client.wait_for(lambda npcs: all(npcs.get(n, {}).get("x") == x for n in ids))
            frames = view.of_type("positions")
            assert len(frames) >= steps // 2, view.replica  # really many frames, not one
            for frame in frames:
                seen = [u["id"] for u in frame["updates"]]
                assert len(seen) == len(set(seen)), (view.replica, frame)
            for npc in ids:
                xs = [u["x"] for u in view.positions_of(npc)]
                assert xs == sorted(xs), (view.replica, npc, xs)
                assert xs[-1] == x


async def test_commands_are_routed_across_replicas(cluster: Cluster, rest: list[Rest]) -> None:
    (npc,) = npc_ids("cmd", 1)
    received: list[dict[str, Any]] = []
    async with bots([(npc, cluster[1])], on_command=received.append) as fleet:
        bot = fleet[npc]
        # As an operator would: first see the bot online (presence claimed), then command it.
        for r in rest:
            await until(_online(r, npc), f"{npc} online on {r.base}", cluster=cluster)
        for asking in (0, 2, 1):  # from A and C (routed over the bus), and from B itself
            status, body = await rest[asking].call(
                "POST", f"/api/npcs/{npc}/commands", {"action": "mine", "args": {"from": asking}}
            )
            assert status == 202, body
            assert body["delivered"] is True
            command_id = body["id"]
            await until(lambda cid=command_id: any(c["id"] == cid for c in received), "the command")
            got = next(c for c in received if c["id"] == command_id)
            assert got == {
                "type": "command",
                "id": command_id,
                "action": "mine",
                "args": {"from": asking},
            }
            # The bot acked on receipt (SDK default); every replica can see the ack.
            for reader in rest:

                async def acked(reader: Rest = reader, cid: str = command_id) -> bool:
                    status, record = await reader.call("GET", f"/api/commands/{cid}")
                    return status == 200 and record["status"] == "acked"

                await until(acked, f"command {command_id} acked on {reader.base}", cluster=cluster)
            _, record = await rest[2].call("GET", f"/api/commands/{command_id}")
            assert (record["npc"], record["action"]) == (npc, "mine")
        assert bot.commands_received == 3

    # Registered but with no bot anywhere (it just hung up): queued on every replica (§11)...
    queued: list[str] = []
    for r in rest:

        async def queues(r: Rest = r) -> bool:
            status, body = await r.call("POST", f"/api/npcs/{npc}/commands", {"action": "mine"})
            if status == 202 and body["queued"] is True and body["delivered"] is False:
                queued.append(body["id"])
                return True
            return False

        await until(queues, f"a queued command from {r.base}", cluster=cluster)
        status, record = await r.call("GET", f"/api/commands/{queued[-1]}")
        assert (status, record["status"]) == (200, "queued")
    # ...and handed over once when the bot comes back, to another replica than before.
    got: list[str] = []
    async with bots([(npc, cluster[2])], on_command=lambda m: got.append(m["id"])):
        await until(lambda: len(got) == len(queued), "the queued commands", cluster=cluster)
        assert got == queued
    status, body = await rest[0].call("POST", "/api/npcs/never-seen-npc/commands", {"action": "x"})
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_newer_connection_on_another_replica_replaces_the_older(
    cluster: Cluster, rest: list[Rest]
) -> None:
    npc, marker = npc_ids("dup", 2)
    async with watchers([cluster[0], cluster[2]]) as views:
        async with bots([(npc, cluster[0])]) as first:
            older = first[npc]
            await older.send_position(1, 64, 1)
            for view in views:
                await view.client.wait_for(has_position(npc, 1))
            async with bots([(npc, cluster[1])]) as second:
                newer = second[npc]
                assert (await older.wait_closed()) == 4409  # closed by A on B's word
                assert older.stopped and newer.connected
                # A has let go of the old session (no more bots held there).
                await until(_held_bots(rest[0], 0), "A to drop the old session", cluster=cluster)
                # A marker from A after the handover: had A announced `left`, it came first.
                async with bots([(marker, cluster[0])]) as marking:
                    await marking[marker].send_event("marker")
                    for view in views:  # from the record: it may already have arrived
                        await until(
                            lambda v=view: v.events(marker) == ["marker"],
                            f"the marker on {view.replica}",
                            cluster=cluster,
                        )
                await newer.send_position(2, 64, 2)
                for view in views:
                    await view.client.wait_for(has_position(npc, 2))
                    assert "left" not in view.presence_changes(npc), view.replica
                    assert view.client.npcs[npc]["online"] is True
                status, body = await rest[2].call("GET", f"/api/npcs/{npc}")
                assert status == 200 and body["online"] is True and body["x"] == 2
                assert newer.connected  # the newer one is kept


def _online(client: Rest, npc: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        status, body = await client.call("GET", f"/api/npcs/{npc}")
        return status == 200 and body["online"] is True

    return check


def _held_bots(client: Rest, expected: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        status, perf = await client.call("GET", "/api/performance")
        return status == 200 and perf["connections"]["npcs"] == expected

    return check


async def test_cache_invalidation_is_seen_from_another_replica(
    cluster: Cluster, rest: list[Rest]
) -> None:
    (npc,) = npc_ids("cache", 1)
    a, b, c = rest
    status, _ = await a.call("POST", "/api/npcs", {"id": npc, "name": "Old", "role": "miner"})
    assert status == 201
    # Warm the shared cache from B and C (entry and list page).
    for _ in range(2):
        status, got = await b.call("GET", f"/api/npcs/{npc}")
        assert (status, got["name"]) == (200, "Old")
        status, page = await c.call("GET", "/api/npcs?role=miner&limit=500")
        assert npc in {n["id"] for n in page["npcs"]}
    hits_before = (await b.call("GET", "/api/performance"))[1]["cache"]["totalHits"]
    assert hits_before > 0  # B really was served from the cache

    status, changed = await a.call("PATCH", f"/api/npcs/{npc}", {"name": "New", "role": "smith"})
    assert (status, changed["name"]) == (200, "New")
    # At once, no waiting: the write on A invalidated the shared entry and bumped the version.
    status, got = await b.call("GET", f"/api/npcs/{npc}")
    assert (status, got["name"], got["role"]) == (200, "New", "smith")
    status, page = await c.call("GET", "/api/npcs?role=miner&limit=500")
    assert npc not in {n["id"] for n in page["npcs"]}
    status, page = await c.call("GET", "/api/npcs?role=smith&limit=500")
    assert npc in {n["id"] for n in page["npcs"]}

    status, _ = await c.call("DELETE", f"/api/npcs/{npc}")
    assert status == 204
    assert (await b.call("GET", f"/api/npcs/{npc}"))[0] == 404
    assert (await a.call("GET", f"/api/npcs/{npc}"))[0] == 404


# -- clusters of their own (a replica is killed, Redis is stopped) --------------------------------
async def test_presence_expires_after_a_replica_is_killed(pg_server: PostgresServer) -> None:
    with running_cluster(pg_server, 2) as cl:
        a, b = cl.replicas
        doomed, survivor = npc_ids("doomed", 2), npc_ids("survivor", 1)
        placement = [(n, a) for n in doomed] + [(n, b) for n in survivor]
        rest_b = Rest(b.http, token("admin", "ops"))
        try:
            async with watchers([b]) as (view,), bots(placement, backoff_max=1.0) as fleet:
                for i, bot in enumerate(fleet.values()):
                    await bot.send_position(i, 64, 0)
                await view.client.wait_for(
                    lambda npcs: all(npcs.get(n, {}).get("online") for n in fleet)
                )
                for npc in fleet:
                    status, body = await rest_b.call("GET", f"/api/npcs/{npc}")
                    assert status == 200 and body["online"] is True

                a.kill()  # SIGKILL: no drain, no `left`, no presence release

                async def expired() -> bool:
                    got = [await rest_b.call("GET", f"/api/npcs/{n}") for n in doomed]
                    return all(status == 200 and not body["online"] for status, body in got)

                # Claims live PRESENCE_TTL_S after the last heartbeat: poll, with some margin.
                await until(expired, "presence to expire", PRESENCE_TTL_S + 15, cluster=cl)
                # Viewers on the survivor are told too: a silent replica's bots have left.
                await view.client.wait_for(
                    lambda npcs: not any(npcs.get(n, {}).get("online") for n in doomed),
                    timeout=PRESENCE_TTL_S + 15,
                )
                status, body = await rest_b.call("GET", f"/api/npcs/{survivor[0]}")
                assert status == 200 and body["online"] is True
                status, page = await rest_b.call("GET", "/api/npcs?online=false&limit=500")
                assert set(doomed) <= {n["id"] for n in page["npcs"]}
                status, page = await rest_b.call("GET", "/api/npcs?online=true&limit=500")
                assert {n["id"] for n in page["npcs"]} == set(survivor)
                # Commands to the dead replica's bots: nobody holds them, so they wait (§10).
                status, body = await rest_b.call(
                    "POST", f"/api/npcs/{doomed[0]}/commands", {"action": "mine"}
                )
                assert (status, body["queued"]) == (202, True)
        finally:
            await rest_b.close()


async def test_redis_stopped_and_restarted_mid_stream(pg_server: PostgresServer) -> None:
    with running_cluster(pg_server, 2) as cl:
        a, b = cl.replicas
        (npc,) = npc_ids("outage", 1)
        rest_a, rest_b = Rest(a.http, token("admin", "ops")), Rest(b.http, token("admin", "ops"))
        try:
            async with watchers([a, b]) as (near, far), bots([(npc, a)]) as fleet:
                bot = fleet[npc]
                x = 1
                await bot.send_position(x, 64, 0)
                for view in (near, far):
                    await view.client.wait_for(has_position(npc, x), WAIT_S)

                cl.redis.stop()

                async def bus_down(client: Rest) -> bool:
                    status, perf = await client.call("GET", "/api/performance")
                    return status == 200 and perf["bus"]["connected"] is False

                await until(lambda: bus_down(rest_a), "A's bus to report the outage", cluster=cl)
                await until(lambda: bus_down(rest_b), "B's bus to report the outage", cluster=cl)
                far_before = far.client.npcs[npc]["x"]
                # Local delivery never stops: every position reaches the viewer on the bot's
                # own replica while Redis is down.
                for _ in range(10):
                    x += 1
                    await bot.send_position(x, 64, 0)
                    await near.client.wait_for(has_position(npc, x), WAIT_S)
                assert far.client.npcs[npc]["x"] == far_before  # nothing crossed without Redis
                # REST on A still answers, from what A knows itself.
                status, body = await rest_a.call("GET", f"/api/npcs/{npc}")
                assert status == 200 and body["online"] is True and body["x"] == x
                status, perf = await rest_a.call("GET", "/api/performance")
                assert perf["bus"]["connected"] is False and perf["bus"]["dropped"] > 0
                assert "redis" in perf["circuitBreakers"]

                cl.redis.start()  # same port, empty (no persistence)

                # Cross-replica delivery resumes by itself: keep moving until B sees it.
                async def crossed() -> bool:
                    nonlocal x
                    x += 1
                    await bot.send_position(x, 64, 0)
                    await near.client.wait_for(has_position(npc, x), WAIT_S)
                    return far.client.npcs[npc]["x"] > far_before

                await until(crossed, "positions to reach B again", cluster=cl)
                x += 1
                await bot.send_position(x, 64, 0)
                await far.client.wait_for(has_position(npc, x), WAIT_S)
                for client in (rest_a, rest_b):
                    await until(
                        lambda c=client: _bus_connected(c), "bus connected again", cluster=cl
                    )

                # Presence re-registers with the heartbeat: B sees the bot online again.
                async def online_on_b() -> bool:
                    status, body = await rest_b.call("GET", f"/api/npcs/{npc}")
                    return status == 200 and body["online"] is True

                await until(online_on_b, "presence re-registered", 20.0, cluster=cl)
                # Positions of the NPC never went backwards at either viewer through it all.
                for view in (near, far):
                    xs = [u["x"] for u in view.positions_of(npc)]
                    assert xs == sorted(xs), (view.replica, xs)
        finally:
            await rest_a.close()
            await rest_b.close()


async def _bus_connected(client: Rest) -> bool:
    status, perf = await client.call("GET", "/api/performance")
    return status == 200 and perf["bus"]["connected"] is True
