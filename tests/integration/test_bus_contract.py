"""The bus contract (gateway/bus/base.py), run against every backend.

Each bus instance plays one replica. Absence of a message is proven with a fence: a later
message from the same publisher (or one sent after the first was seen) that the bus must
deliver after it, never with a sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.bus.base import EVENTS, Bus, command_channel
from gateway.bus.cluster import ClusterBus, redis_bus
from gateway.bus.memory import MemoryBroker, MemoryBus
from gateway.bus.messages import Status, encode
from gateway.regions import region_channel
from tests.backends import MEMORY_AND_REDIS, backend_url
from tests.wait import until

POSITIONS = region_channel("overworld", 0, 0)

DEADLINE_S = 10.0


def note(sender: str, text: str) -> bytes:
    """A payload as replicas publish them: in an envelope naming `sender`, which is how a
    backend that hears its own messages (Redis) recognises them."""
    return encode(sender, Status(npc="n1", status=text))


class Recorder:
    """A bus handler that keeps what it got."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.fail_on: bytes | None = None  # simulate a handler bug on this payload

    def __call__(self, channel: str, payload: bytes) -> None:
        self.messages.append((channel, payload))
        if payload == self.fail_on:
            raise RuntimeError("handler bug")

    def payloads(self, channel: str | None = None) -> list[bytes]:
        return [p for c, p in self.messages if channel is None or c == channel]


MakeBus = Callable[..., Awaitable[tuple[Bus, Recorder]]]


@pytest.fixture(params=MEMORY_AND_REDIS)
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[MakeBus]:
    broker = MemoryBroker()
    url = backend_url(request)
    made: list[Bus] = []

    async def make(replica: str, regions: set[str] | None = None) -> tuple[Bus, Recorder]:
        bus: Bus = redis_bus(url) if url else MemoryBus(broker)
        recorder = Recorder()
        made.append(bus)
        bus.set_positions(regions)  # before start: heard from the first message on
        await bus.start(replica, recorder)
        return bus, recorder

    yield make
    for bus in made:
        await bus.close()


async def test_message_reaches_other_replica_not_sender(make_bus: MakeBus) -> None:
    a, got_a = await make_bus("A")
    b, got_b = await make_bus("B")

    a.publish(POSITIONS, note("A", "pos-1"))
    await until(lambda: got_b.payloads() == [note("A", "pos-1")], "B to receive A's message")
    assert got_b.messages == [(POSITIONS, note("A", "pos-1"))]

    # Fence: B answers after seeing pos-1, so A would have had pos-1 before the fence.
    b.publish(EVENTS, note("B", "fence"))
    await until(lambda: bool(got_a.messages), "A to receive B's fence")
    assert got_a.messages == [(EVENTS, note("B", "fence"))]


async def test_a_replica_whose_name_starts_another_is_not_it(make_bus: MakeBus) -> None:
    a, got_a = await make_bus("A")
    ab, got_ab = await make_bus("AB")
    a.publish(EVENTS, note("A", "from-A"))
    await until(lambda: bool(got_ab.messages), "AB to hear A")
    ab.publish(EVENTS, note("AB", "from-AB"))  # fence: AB sends after it heard A
    await until(lambda: bool(got_a.messages), "A to hear AB")
    assert got_ab.payloads() == [note("A", "from-A")]
    assert got_a.payloads() == [note("AB", "from-AB")]


async def test_order_kept_per_publisher(make_bus: MakeBus) -> None:
    a, _ = await make_bus("A")
    _, got_b = await make_bus("B")
    sent = [f"m{i}".encode() for i in range(500)]
    for i, payload in enumerate(sent):
        a.publish(POSITIONS if i % 2 else EVENTS, payload)
        if i % 100 == 0:
            await asyncio.sleep(0)  # let the sender drain some, so both paths are used

    await until(lambda: len(got_b.messages) == len(sent), "all 500 messages")
    assert got_b.payloads(POSITIONS) == sent[1::2]
    assert got_b.payloads(EVENTS) == sent[0::2]
    if not isinstance(a, ClusterBus):
        # One server: one order across channels too. A cluster keeps it per channel only
        # (region channels live on other masters than the events channel).
        assert got_b.payloads() == sent


async def test_binary_payloads_survive(make_bus: MakeBus) -> None:
    a, _ = await make_bus("A")
    _, got_b = await make_bus("B")
    # Any bytes travel; only envelopes (`note`) are told apart as the sender's echoes, so
    # tests that look at the sender's side publish those.
    payloads = [b"", bytes(range(256)), b"\x00" * 70_000]
    for payload in payloads:
        a.publish(EVENTS, payload)
    await until(lambda: len(got_b.messages) == len(payloads), "the binary payloads")
    assert got_b.payloads() == payloads


async def test_command_channel_reaches_only_named_replica(make_bus: MakeBus) -> None:
    a, got_a = await make_bus("A")
    _, got_b = await make_bus("B")
    _, got_c = await make_bus("C")

    cmd, fence = note("A", "cmd-for-B"), note("A", "fence")
    a.publish(command_channel("B"), cmd)
    a.publish(EVENTS, fence)  # same publisher, later: C gets it after any cmd-for-B

    await until(lambda: len(got_b.messages) == 2, "B to receive the command and the fence")
    assert got_b.messages == [(command_channel("B"), cmd), (EVENTS, fence)]
    await until(lambda: bool(got_c.messages), "C to receive the fence")
    assert got_c.messages == [(EVENTS, fence)]
    assert got_a.messages == []


async def test_counters(make_bus: MakeBus) -> None:
    a, _ = await make_bus("A")
    b, got_b = await make_bus("B")
    for i in range(3):
        a.publish(POSITIONS, note("A", f"x{i}"))
    await until(lambda: len(got_b.messages) == 3, "three messages")
    await until(lambda: a.stats()["published"] == 3, "A to count three sent")

    sa, sb = a.stats(), b.stats()
    assert sa["backend"] == sb["backend"] == a.backend
    assert (sa["published"], sa["received"], sa["dropped"]) == (3, 0, 0)
    assert (sb["published"], sb["received"], sb["dropped"]) == (0, 3, 0)
    assert sa["connected"] is True and sb["connected"] is True
    # Bytes (docs/scaling.md): at least the payloads (Redis counts the echoes of its own messages
    # that reach it too: what came in over the wire).
    assert sa["published_bytes"] >= 6 and sb["published_bytes"] == 0
    assert sb["received_bytes"] >= 6


async def until_heard(sender: Bus, got: Recorder, channel: str) -> None:
    """Publish on `channel` until `got` hears it (a subscription lands asynchronously)."""

    def heard() -> bool:
        if got.payloads(channel):
            return True
        sender.publish(channel, b"probe")
        return False

    await until(heard, f"{channel} to be heard")


# On the test cluster both are on one master (slots 6048 and 8336 of 5461-10922), so one
# publisher's message on one is a fence for the other there too.
R1, R2 = region_channel("overworld", 100, 100), region_channel("overworld", 600, 100)


async def test_a_replica_hears_only_the_regions_it_asked_for(make_bus: MakeBus) -> None:
    a, _ = await make_bus("A")
    b, got_b = await make_bus("B", {R1})
    a.publish(R2, b"elsewhere")
    a.publish(R1, b"here")  # fence: same publisher, later
    await until(lambda: got_b.payloads() == [b"here"], "B to hear its region")
    assert got_b.messages == [(R1, b"here")]
    assert b.stats()["received_bytes"] > 0


async def test_region_subscriptions_follow_the_viewers(make_bus: MakeBus) -> None:
    a, _ = await make_bus("A")
    b, got_b = await make_bus("B", set())  # no viewers: no region at all
    a.publish(R1, b"unheard")
    a.publish(EVENTS, b"fence-0")
    await until(lambda: got_b.payloads() == [b"fence-0"], "the fence")

    b.set_positions({R2})  # a viewer moved to R2: heard once the subscription lands
    await until_heard(a, got_b, R2)
    b.set_positions(None)  # a viewer without filter: every region, R1 too
    await until_heard(a, got_b, R1)

    b.set_positions({R2})  # R1 dropped again: a probe on R1 is no longer delivered
    probes = 0

    async def probe_unheard() -> bool:
        nonlocal probes
        probes += 1
        before = len(got_b.payloads(R1))
        a.publish(R1, b"probe-%d" % probes)
        a.publish(R2, b"fence-%d" % probes)
        await until(lambda: b"fence-%d" % probes in got_b.payloads(R2), "the R2 fence")
        return len(got_b.payloads(R1)) == before

    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not await probe_unheard():
        assert asyncio.get_running_loop().time() < deadline, "R1 still heard"
    assert await probe_unheard()  # and it stays so


async def test_handler_error_does_not_stop_delivery(make_bus: MakeBus) -> None:
    a, _ = await make_bus("A")
    _, got_b = await make_bus("B")
    got_b.fail_on = b"boom"
    a.publish(EVENTS, b"boom")
    a.publish(EVENTS, b"after")
    await until(lambda: got_b.payloads() == [b"boom", b"after"], "delivery past the error")
