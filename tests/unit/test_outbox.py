"""The shared outbox: direct writes while the socket keeps up, else one writer, in order."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import WSMsgType

import gateway.outbox
from gateway.outbox import Outbox


class FakeSocket:
    """Records frames; `keeps_up` decides the direct path, `gate` holds the writer's sends."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed = False
        self.keeps_up = True
        self.gate: asyncio.Event | None = None
        self.blocked = asyncio.Event()  # a send waits at the gate

    async def send_frame(self, payload: bytes, opcode: WSMsgType) -> None:
        self.frames.append(payload)
        if self.gate is not None:
            self.blocked.set()
            await self.gate.wait()  # written, but the peer does not read: drain waits


@pytest.fixture(autouse=True)
def fake_write_now(monkeypatch: pytest.MonkeyPatch) -> None:
    def write_now(ws: FakeSocket, payload: bytes, opcode: WSMsgType) -> bool:
        if ws.keeps_up:
            ws.frames.append(payload)
        return ws.keeps_up

    monkeypatch.setattr(gateway.outbox, "write_now", write_now)


def outbox(ws: FakeSocket, **kwargs: Any) -> Outbox:
    return Outbox(ws, WSMsgType.TEXT, **kwargs)  # type: ignore[arg-type]


async def drained(box: Outbox) -> None:
    """Queue a step and wait for the writer to reach it: all before it was sent."""
    reached = asyncio.get_running_loop().create_future()

    async def mark() -> None:
        reached.set_result(None)

    box.queue(mark)
    await reached


async def test_nothing_leaves_before_open_then_all_in_order() -> None:
    ws = FakeSocket()
    box = outbox(ws)
    assert box.send(b"welcome") and box.send(b"error")
    assert ws.frames == [] and len(box) == 2
    box.open()
    assert box.send(b"later")  # queued behind the two: no overtaking
    await drained(box)
    assert ws.frames == [b"welcome", b"error", b"later"]
    assert box.queued_bytes == 0 and len(box) == 0


async def test_written_at_once_while_the_socket_keeps_up() -> None:
    ws = FakeSocket()
    box = outbox(ws)
    box.open()
    assert box.send(b"pong")
    assert ws.frames == [b"pong"] and len(box) == 0  # no writer needed
    ws.keeps_up = False
    assert box.send(b"queued")
    ws.keeps_up = True
    assert not box.try_now(b"too early")  # something waits: it would overtake
    await drained(box)
    assert ws.frames == [b"pong", b"queued"]


async def test_the_byte_bound_refuses_and_frees_as_frames_leave() -> None:
    ws = FakeSocket()
    ws.keeps_up = False
    box = outbox(ws, max_bytes=10)
    assert box.send(b"12345") and box.send(b"67890")
    assert not box.send(b"x")  # refused: nothing queued
    assert box.queued_bytes == 10
    box.open()
    await drained(box)
    assert ws.frames == [b"12345", b"67890"] and box.queued_bytes == 0
    assert box.send(b"x")


async def test_the_latest_frame_goes_after_the_queue_and_holds_direct_writes() -> None:
    ws = FakeSocket()
    done = asyncio.get_running_loop().create_future()

    async def latest() -> None:
        await box.write(b"positions")
        done.set_result(None)

    box = outbox(ws, latest=latest)
    box.open()
    ws.keeps_up = False
    box.send(b"status")
    box.latest_due()
    ws.keeps_up = True
    assert not box.try_now(b"event")  # it would overtake the pending positions
    box.queue(b"event")
    await done
    assert ws.frames == [b"status", b"event", b"positions"]


async def test_stalled_counts_the_send_in_flight_only() -> None:
    ws = FakeSocket()
    ws.keeps_up = False
    box = outbox(ws)
    box.send(b"held")
    assert box.stalled_for(time.monotonic() + 100.0) == 0.0  # held before open: not the peer
    ws.gate = asyncio.Event()
    box.open()
    await ws.blocked.wait()
    assert box.stalled_for(time.monotonic() + 10.0) >= 10.0
    ws.gate.set()
    await drained(box)
    assert box.stalled_for(time.monotonic() + 10.0) == 0.0


def test_keep_and_clear_account_for_what_goes() -> None:
    ws = FakeSocket()
    box = outbox(ws)

    async def step() -> None: ...

    box.send(b"abc")
    box.queue(step)
    box.send(b"de")
    assert box.keep(lambda entry: type(entry) is bytes) == 1
    assert len(box) == 2 and box.queued_bytes == 5
    assert box.clear() == 2 and box.queued_bytes == 0 and len(box) == 0


async def test_a_bug_in_a_step_goes_to_the_owner() -> None:
    ws = FakeSocket()
    told = asyncio.get_running_loop().create_future()

    async def failed() -> None:
        told.set_result(None)

    async def buggy() -> None:
        raise ValueError("a bug")

    box = outbox(ws, failed=failed)
    box.open()
    box.queue(buggy)
    await told  # logged, then the owner decides (a viewer closes 1008)
