"""Region channels spread over a Redis Cluster's masters (issue #13), with real servers.

Bus instances play replicas on the session's throwaway cluster of three masters: a publisher,
a subscriber to listed regions and one hearing every region. Each region channel is its own
slot: regions land on different masters, each heard on a connection to its own master, and a
master killed takes only its regions away until it is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.crc import key_slot

from gateway.bus.base import EVENTS
from gateway.bus.cluster import TAG, ClusterBus, wire_name
from gateway.bus.messages import PositionsWindow, encode
from gateway.regions import region_channel
from gateway.testing.redis_cluster import RedisClusterServers
from gateway.testing.redis_server import RedisServer
from tests.integration.test_bus_contract import Recorder
from tests.wait import until

pytestmark = pytest.mark.redis

WAIT_S = 30.0  # generous: the machine is shared
MakeBus = Callable[[str, set[str] | None], Awaitable[tuple[ClusterBus, Recorder]]]


def shard_subscribers(node: RedisServer, wire: str) -> int:
    """PUBSUB SHARDNUMSUB on `node`: its connections subscribed to `wire`."""
    reply = node.command("PUBSUB", "SHARDNUMSUB", wire)
    return int(reply.rsplit(b":", 1)[1].strip())


def spread_regions(cluster: RedisClusterServers, count: int) -> list[str]:
    """`count` region channels on as many masters, none of them the bus's master."""
    bus = cluster.master_of(TAG)
    found: dict[int, str] = {}
    for rx in range(64):
        channel = region_channel("overworld", rx * 512.0, 0.0)
        master = cluster.master_of(wire_name(channel))
        if master is not bus and master.port not in found:
            found[master.port] = channel
    if len(found) < count:
        raise AssertionError(f"only {len(found)} masters besides the bus's")
    return list(found.values())[:count]


def beside(cluster: RedisClusterServers, channel: str) -> str:
    """Another region channel on `channel`'s master (in another slot)."""
    master = cluster.master_of(wire_name(channel))
    for rz in range(1, 64):
        other = region_channel("overworld", 0.0, rz * 512.0)
        if other != channel and cluster.master_of(wire_name(other)) is master:
            return other
    raise AssertionError("no other region on that master")


@pytest.fixture
async def make_bus(redis_cluster_url: str) -> AsyncIterator[MakeBus]:
    made: list[ClusterBus] = []

    async def make(replica: str, regions: set[str] | None) -> tuple[ClusterBus, Recorder]:
        bus = ClusterBus(redis_cluster_url)
        recorder = Recorder()
        made.append(bus)
        bus.set_positions(regions)
        await bus.start(replica, recorder)
        return bus, recorder

    yield make
    for bus in made:
        await bus.close()


class Windows:
    """One publisher's position windows, each a distinct payload (its own cut time)."""

    def __init__(self, bus: ClusterBus, sender: str) -> None:
        self.bus, self.sender = bus, sender
        self.sent: dict[str, list[bytes]] = {}
        self.ts = 1_000

    def publish(self, channel: str) -> bytes:
        self.ts += 1
        row = ("walker", 1.0, 64.0, 1.0, 0.0, 0.0, "overworld")
        payload = encode(self.sender, PositionsWindow(ts=self.ts, rows=[row]))
        self.bus.publish(channel, payload)
        self.sent.setdefault(channel, []).append(payload)
        return payload


def heard_anew(windows: Windows, got: Recorder, region: str) -> Callable[[], bool]:
    """A check that publishes a fresh window on `region` each poll, until one is heard."""
    tries: list[bytes] = []

    def check() -> bool:
        if any(p in got.payloads(region) for p in tries):
            return True
        tries.append(windows.publish(region))
        return False

    return check


async def test_regions_on_different_masters_are_each_heard_from_their_own(
    make_bus: MakeBus, redis_cluster: RedisClusterServers
) -> None:
    spread = spread_regions(redis_cluster, 2)
    regions = [*spread, beside(redis_cluster, spread[0])]  # two slots on one master too
    a, _ = await make_bus("A", set())
    listed, got_listed = await make_bus("B", set(regions))
    every, got_every = await make_bus("C", None)  # hears every region: the registry, copies
    windows = Windows(a, "A")

    # Each subscriber holds a connection to each region's own master, and none elsewhere.
    masters = [redis_cluster.master_of(wire_name(r)) for r in regions]
    assert len({m.port for m in masters}) == 2 and masters[0] is masters[2]

    async def subscribed_on_owners() -> bool:
        for region in regions:  # a window a poll: C learns the regions from the registry
            windows.publish(region)
        return all(
            shard_subscribers(node, wire_name(region)) == (2 if node is master else 0)
            for region, master in zip(regions, masters, strict=True)
            for node in redis_cluster.nodes
        )

    await until(subscribed_on_owners, "B and C subscribed on each region's master", WAIT_S)
    for region in regions:
        windows.publish(region)
    # Fences: a publisher's messages on one channel arrive in order; EVENTS is on the bus's
    # master, where the copies of new regions' windows (NEW_REGIONS) go.
    fences = {region: windows.publish(region) for region in regions}
    a.publish(EVENTS, encode("A", PositionsWindow(ts=0, rows=[])))

    def fenced(got: Recorder) -> bool:
        return all(fence in got.payloads(r) for r, fence in fences.items()) and bool(
            got.payloads(EVENTS)
        )

    await until(lambda: fenced(got_listed) and fenced(got_every), "the fences", WAIT_S)
    for region in regions:
        # B subscribed before anything was published; C heard the first windows as copies
        # and the rest on the region's channel: every window once, in order, for both.
        assert got_listed.payloads(region) == windows.sent[region]
        assert got_every.payloads(region) == windows.sent[region]
    stats = every.stats()
    assert stats["received"] == len(got_every.messages) and stats["dropped"] == 0
    assert listed.stats()["connected"] and every.stats()["connected"]


def region_on(cluster: RedisClusterServers, master: RedisServer) -> str:
    for rz in range(64):
        channel = region_channel("overworld", 0.0, rz * 512.0)
        if cluster.master_of(wire_name(channel)) is master:
            return channel
    raise AssertionError("no region on that master")


@pytest.mark.parametrize("bus_master", [False, True], ids=["region-master", "bus-master"])
async def test_a_dead_master_takes_only_its_regions_away_until_it_is_back(
    make_bus: MakeBus, redis_cluster: RedisClusterServers, bus_master: bool
) -> None:
    """A master dies: the windows of the regions it owns are dropped, those of a region on
    another master keep crossing; when it is back, its regions resume by themselves. When it
    is the bus's master, events and copies go with it, not the other masters' regions."""
    lost, kept = spread_regions(redis_cluster, 2)
    if bus_master:
        lost = region_on(redis_cluster, redis_cluster.master_of(TAG))
    a, _ = await make_bus("A", set())
    b, got = await make_bus("B", {lost, kept})
    windows = Windows(a, "A")

    def heard_again(region: str) -> Callable[[], bool]:
        return heard_anew(windows, got, region)

    await until(heard_again(lost), "the first region", WAIT_S, interval_s=0.05)
    await until(heard_again(kept), "the second region", WAIT_S, interval_s=0.05)

    victim = redis_cluster.master_of(wire_name(lost))
    victim.kill()
    redis_cluster.wait_state("fail")  # the cluster refuses keyed commands now
    await until(heard_again(kept), "the region on a live master", WAIT_S, interval_s=0.05)

    def lost_dropped() -> bool:
        windows.publish(lost)
        return a.stats()["dropped"] > 0

    await until(lost_dropped, "A to drop the dead master's windows", WAIT_S, interval_s=0.05)
    assert not b.stats()["connected"]  # its connection to the dead master is down
    reconnects = b.stats()["reconnects"]

    victim.start()
    redis_cluster.wait_state("ok")
    await until(heard_again(lost), "the region back on its master", WAIT_S, interval_s=0.05)
    await until(heard_again(kept), "the other region still", WAIT_S, interval_s=0.05)
    assert b.stats()["reconnects"] > reconnects
    await until(lambda: b.stats()["connected"], "B connected everywhere again", WAIT_S)


async def test_a_region_whose_slot_moves_is_heard_from_its_new_master(
    make_bus: MakeBus, redis_cluster: RedisClusterServers
) -> None:
    """A resharding moves a region's slot: the old master unsubscribes the subscriber (a
    `sunsubscribe` it did not ask for) and answers the publisher MOVED; both read the slot map
    again and carry on with the new master."""
    region = spread_regions(redis_cluster, 1)[0]
    wire = wire_name(region)
    slot = key_slot(wire.encode())
    a, _ = await make_bus("A", set())
    _, got = await make_bus("B", {region})
    windows = Windows(a, "A")
    await until(heard_anew(windows, got, region), "the region", WAIT_S, interval_s=0.05)

    old = redis_cluster.master_of(wire)
    new = next(node for node in redis_cluster.nodes if node is not old)
    redis_cluster.move_slot(slot, new)
    try:
        await until(
            heard_anew(windows, got, region), "the region after the move", WAIT_S, interval_s=0.05
        )

        def on_the_new_master() -> bool:
            return shard_subscribers(new, wire) == 1 and shard_subscribers(old, wire) == 0

        await until(on_the_new_master, "B subscribed on the new master only", WAIT_S)
    finally:
        redis_cluster.move_slot(slot, old)


class Arrivals(Recorder):
    """A Recorder that also notes when each payload arrived (monotonic)."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[bytes, float] = {}

    def __call__(self, channel: str, payload: bytes) -> None:
        self.at.setdefault(payload, time.monotonic())
        super().__call__(channel, payload)


async def test_a_hung_master_holds_up_no_other_region(
    redis_cluster_url: str, redis_cluster: RedisClusterServers
) -> None:
    """A master that accepts connections and never answers (SIGSTOP): the publisher's parts for
    it time out after the socket timeout (2 s); meanwhile the windows of a region on another
    master keep crossing without waiting for it (a batch waits SLOW_S at most)."""
    hung, kept = spread_regions(redis_cluster, 2)
    a, b, got = ClusterBus(redis_cluster_url), ClusterBus(redis_cluster_url), Arrivals()
    b.set_positions({hung, kept})
    a.set_positions(set())
    await b.start("B", got)
    await a.start("A", Recorder())
    windows = Windows(a, "A")
    victim = redis_cluster.master_of(wire_name(hung))
    try:
        await until(heard_anew(windows, got, hung), "the region to hang", WAIT_S)
        await until(heard_anew(windows, got, kept), "the region to keep", WAIT_S)
        victim.pause()
        sent_at: dict[bytes, float] = {}
        end = time.monotonic() + 3.0  # past the socket timeout and a retry
        while time.monotonic() < end:
            windows.publish(hung)  # so every batch has a part for the hung master
            sent_at[windows.publish(kept)] = time.monotonic()
            await asyncio.sleep(0.1)  # pacing the publisher, not synchronising
        await until(lambda: all(p in got.at for p in sent_at), "every kept window", WAIT_S)
        lags = [got.at[p] - t for p, t in sent_at.items()]
        assert max(lags) < 1.0, f"kept windows waited for the hung master: {max(lags):.2f} s"
        assert a.stats()["dropped"] > 0
    finally:
        victim.resume()
        await a.close()
        await b.close()
        redis_cluster.wait_state("ok")
