"""The bus contract (gateway/bus/base.py), run against every backend.

Each bus instance plays one replica. Absence of a message is proven with a fence: a later
message from the same publisher (or one sent after the first was seen) that the bus must
deliver after it, never with a sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.bus.base import EVENTS, POSITIONS, Bus, command_channel
from gateway.bus.memory import MemoryBroker, MemoryBus
from gateway.bus.redis import RedisBus

DEADLINE_S = 10.0


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


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Poll the loop until `predicate` holds; fail after a generous deadline."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


MakeBus = Callable[[str], Awaitable[tuple[Bus, Recorder]]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[MakeBus]:
    broker = MemoryBroker()
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    made: list[Bus] = []

    async def make(replica: str) -> tuple[Bus, Recorder]:
        bus: Bus = RedisBus(url) if url else MemoryBus(broker)
        recorder = Recorder()
        made.append(bus)
        await bus.start(replica, recorder)
        return bus, recorder

    yield make
    for bus in made:
        await bus.close()


async def test_message_reaches_other_replica_not_sender(make_bus: MakeBus) -> None:
    a, got_a = await make_bus("A")
    b, got_b = await make_bus("B")

    a.publish(POSITIONS, b"pos-1")
    await until(lambda: got_b.payloads() == [b"pos-1"], "B to receive A's message")
    assert got_b.messages == [(POSITIONS, b"pos-1")]

    # Fence: B answers after seeing pos-1, so A would have had pos-1 before the fence.
    b.publish(EVENTS, b"fence")
    await until(lambda: bool(got_a.messages), "A to receive B's fence")
    assert got_a.messages == [(EVENTS, b"fence")]


async def test_order_kept_per_publisher(make_bus: MakeBus) -> None:
    a, _ = await make_bus("A")
    _, got_b = await make_bus("B")
    sent = [f"m{i}".encode() for i in range(500)]
    for i, payload in enumerate(sent):
        a.publish(POSITIONS if i % 2 else EVENTS, payload)
        if i % 100 == 0:
            await asyncio.sleep(0)  # let the sender drain some, so both paths are used

    await until(lambda: len(got_b.messages) == len(sent), "all 500 messages")
    assert got_b.payloads() == sent
    assert got_b.payloads(POSITIONS) == sent[1::2]


async def test_binary_payloads_survive(make_bus: MakeBus) -> None:
    a, _ = await make_bus("A")
    _, got_b = await make_bus("B")
    payloads = [b"", bytes(range(256)), b"\x00" * 70_000]
    for payload in payloads:
        a.publish(EVENTS, payload)
    await until(lambda: len(got_b.messages) == len(payloads), "the binary payloads")
    assert got_b.payloads() == payloads


async def test_command_channel_reaches_only_named_replica(make_bus: MakeBus) -> None:
    a, got_a = await make_bus("A")
    _, got_b = await make_bus("B")
    _, got_c = await make_bus("C")

    a.publish(command_channel("B"), b"cmd-for-B")
    a.publish(EVENTS, b"fence")  # same publisher, later: C gets it after any cmd-for-B

    await until(lambda: len(got_b.messages) == 2, "B to receive the command and the fence")
    assert got_b.messages == [(command_channel("B"), b"cmd-for-B"), (EVENTS, b"fence")]
    await until(lambda: bool(got_c.messages), "C to receive the fence")
    assert got_c.messages == [(EVENTS, b"fence")]
    assert got_a.messages == []


async def test_counters(make_bus: MakeBus) -> None:
    a, _ = await make_bus("A")
    b, got_b = await make_bus("B")
    for i in range(3):
        a.publish(POSITIONS, b"x%d" % i)
    await until(lambda: len(got_b.messages) == 3, "three messages")
    await until(lambda: a.stats()["published"] == 3, "A to count three sent")

    sa, sb = a.stats(), b.stats()
    assert sa["backend"] == sb["backend"] == a.backend
    assert (sa["published"], sa["received"], sa["dropped"]) == (3, 0, 0)
    assert (sb["published"], sb["received"], sb["dropped"]) == (0, 3, 0)
    assert sa["connected"] is True and sb["connected"] is True


async def test_handler_error_does_not_stop_delivery(make_bus: MakeBus) -> None:
    a, _ = await make_bus("A")
    _, got_b = await make_bus("B")
    got_b.fail_on = b"boom"
    a.publish(EVENTS, b"boom")
    a.publish(EVENTS, b"after")
    await until(lambda: got_b.payloads() == [b"boom", b"after"], "delivery past the error")
