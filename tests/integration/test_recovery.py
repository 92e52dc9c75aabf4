"""Event history and recovery (§11) over real sockets: embedded and on a real Redis.

A viewer that reconnects with `since` gets `recovered`, the events it missed in order, then
live ones: no gap and no duplicate, area/dimension filters applied to the replay too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.client import ViewerClient
from tests.harness import Peer, Rest, RunningGateway, gateway_settings, running_gateway, token
from tests.wait import until


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
async def gw(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[RunningGateway]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    async with running_gateway(gateway_settings(tmp_path, redis_url=url, tick_ms=0)) as running:
        yield running


async def emit(gw: RunningGateway, bot: Peer, n: int, name: str = "tick") -> int:
    """Send `n` events; return the seq of the last once the gateway has numbered it."""
    target = gw.node.history_ring.last_seq + n
    for i in range(n):
        await bot.send({"type": "event", "name": name, "data": {"i": i}})
    await until(lambda: gw.node.history_ring.last_seq >= target, f"{n} events numbered")
    return target


async def resume(gw: RunningGateway, since: str) -> Peer:
    """A viewer connecting with `?since=`, past its welcome and snapshot."""
    peer = await gw.peer(f"/ws/viewer?since={since}", token("viewer", "v"))
    assert (await peer.recv())["type"] == "welcome"
    assert (await peer.recv())["type"] == "snapshot"
    return peer


async def events(peer: Peer, n: int) -> list[dict[str, Any]]:
    return [await peer.recv_type("event") for _ in range(n)]


async def home_and_away(gw: RunningGateway, at: int) -> tuple[Peer, Peer]:
    """Two bots at (at, 64, at): `home` in the overworld, `away` in the nether, both placed."""
    home, away = await gw.bot("home"), await gw.bot("away")
    await home.send({"type": "pos", "x": at, "y": 64, "z": at, "dim": "overworld"})
    await away.send({"type": "pos", "x": at, "y": 64, "z": at, "dim": "the_nether"})
    await home.roundtrip()
    await away.roundtrip()
    return home, away


async def test_a_resuming_viewer_gets_what_it_missed_then_live_events(gw: RunningGateway) -> None:
    bot = await gw.bot("miner")
    viewer, _ = await gw.viewer()
    await emit(gw, bot, 3)
    seen = await events(viewer, 3)
    epoch, last = seen[-1]["epoch"], seen[-1]["seq"]
    assert [e["seq"] for e in seen] == [last - 2, last - 1, last]
    await viewer.close()

    await emit(gw, bot, 5)  # missed while away
    back = await resume(gw, f"{epoch}:{last}")
    assert await back.recv() == {"type": "recovered", "ok": True, "count": 5}
    replay = [await back.recv() for _ in range(5)]
    assert [(m["type"], m["seq"], m["data"]["i"]) for m in replay] == [
        ("event", last + i + 1, i) for i in range(5)
    ]
    assert {m["epoch"] for m in replay} == {epoch}
    await emit(gw, bot, 1)
    live = await back.recv_type("event")
    assert live["seq"] == last + 6


async def test_the_same_by_subscribe_in_msgpack(gw: RunningGateway) -> None:
    bot = await gw.bot("miner")
    last = await emit(gw, bot, 4)
    epoch = gw.node.history_ring.epoch
    viewer, _ = await gw.viewer("msgpack")
    await viewer.send({"type": "subscribe", "since": {"epoch": epoch, "seq": last - 2}})
    assert (await viewer.recv())["type"] == "snapshot"
    assert await viewer.recv() == {"type": "recovered", "ok": True, "count": 2}
    assert [m["seq"] for m in await events(viewer, 2)] == [last - 1, last]


async def test_an_unknown_epoch_or_a_seq_out_of_the_window_gets_a_fresh_snapshot(
    tmp_path: Path,
) -> None:
    settings = gateway_settings(tmp_path, tick_ms=0, history_events=3)
    async with running_gateway(settings) as gw:
        bot = await gw.bot("miner")
        await emit(gw, bot, 6)
        epoch = gw.node.history_ring.epoch
        for since in (f"{epoch}:2", f"{epoch}:99", f"not-{epoch}:5"):
            viewer = await resume(gw, since)
            assert await viewer.recv() == {"type": "recovered", "ok": False}
            assert (await viewer.recv())["type"] == "snapshot"
            await viewer.close()
        # The window's boundary: 3 events kept (4, 5, 6), so resuming after 3 works.
        viewer = await resume(gw, f"{epoch}:3")
        assert await viewer.recv() == {"type": "recovered", "ok": True, "count": 3}
        assert gw.node.recoveries == {"ok": 1, "failed": 3}


async def test_filters_apply_to_replayed_events(gw: RunningGateway) -> None:
    home, away = await home_and_away(gw, 10)
    epoch, start = gw.node.history_ring.epoch or "", gw.node.history_ring.last_seq
    for peer in (home, away, home, away):
        await emit(gw, peer, 1)
    viewer, _ = await gw.viewer()
    await viewer.send(
        {
            "type": "subscribe",
            "dim": "overworld",
            "area": [0, 0, 20, 20],
            "since": {"epoch": epoch or gw.node.history_ring.epoch, "seq": start},
        }
    )
    await viewer.recv_type("snapshot")
    assert await viewer.recv() == {"type": "recovered", "ok": True, "count": 2}
    replay = await events(viewer, 2)
    assert [m["npc"] for m in replay] == ["home", "home"]
    assert [m["seq"] for m in replay] == [start + 1, start + 3]


async def test_resubscribing_with_since_repeats_nothing_already_sent(gw: RunningGateway) -> None:
    home, away = await home_and_away(gw, 1)
    viewer, _ = await gw.viewer()
    await viewer.send({"type": "subscribe", "dim": "overworld"})
    await viewer.recv_type("snapshot")
    start = gw.node.history_ring.last_seq
    await emit(gw, home, 1)
    await emit(gw, away, 1)
    last = await emit(gw, home, 1)
    assert [m["seq"] for m in await events(viewer, 2)] == [start + 1, start + 3]
    # Everything again, since before the three: only the one it was not shown.
    epoch = gw.node.history_ring.epoch
    await viewer.send({"type": "subscribe", "since": {"epoch": epoch, "seq": start}})
    await viewer.recv_type("snapshot")
    assert await viewer.recv() == {"type": "recovered", "ok": True, "count": 1}
    assert (await viewer.recv())["seq"] == start + 2
    await emit(gw, away, 1)
    assert (await viewer.recv_type("event"))["seq"] == last + 1


async def test_no_gap_and_no_duplicate_at_the_seam_under_a_steady_stream(
    gw: RunningGateway,
) -> None:
    bot = await gw.bot("chatty")
    stop = asyncio.Event()

    async def stream() -> None:
        i = 0
        while not stop.is_set():
            await bot.send({"type": "event", "name": "tick", "data": {"i": i}})
            i += 1
            if i % 2 == 0:  # paced (~150/s): a steady stream the viewer keeps up with
                await bot.roundtrip()
                await asyncio.sleep(0.01)

    producer = asyncio.create_task(stream())
    got: list[int] = []
    epoch, replayed = "", 0
    try:
        viewer, _ = await gw.viewer()
        for _round in range(6):
            for _ in range(25):  # some live events on this connection...
                msg = await viewer.recv_type("event")
                epoch = msg["epoch"]
                got.append(msg["seq"])
            await viewer.close()  # ...then away, while the stream goes on
            viewer = await resume(gw, f"{epoch}:{got[-1]}")
            recovered = await viewer.recv()
            assert recovered["type"] == "recovered" and recovered["ok"] is True
            replayed += recovered["count"]
    finally:
        stop.set()
        await producer
    last = gw.node.history_ring.last_seq
    await bot.roundtrip()
    with contextlib.suppress(TimeoutError):
        while not got or got[-1] < last:
            got.append((await viewer.recv_type("event"))["seq"])
    assert got == list(range(got[0], last + 1))  # every event, once, in order
    assert replayed > 0  # the stream went on while the viewer was away


async def test_a_malformed_since_is_refused_and_changes_nothing(gw: RunningGateway) -> None:
    for bad in ("nocolon", "e:-1", "e:x", ":5"):
        with pytest.raises(InvalidStatus) as err:
            await gw.peer(f"/ws/viewer?since={bad}", token("viewer", "v"))
        assert err.value.response.status_code == 400
    viewer, _ = await gw.viewer()
    for since in ({"epoch": "e"}, {"epoch": "", "seq": 1}, "e", {"epoch": "e", "seq": 1.5}):
        await viewer.send({"type": "subscribe", "since": since, "ref": 7})
        error = await viewer.recv()
        assert error["type"] == "error" and error["code"] == "bad_message" and error["ref"] == 7
    await viewer.roundtrip()
    assert gw.node.recoveries == {"ok": 0, "failed": 0}


async def test_performance_and_metrics_show_the_history(tmp_path: Path) -> None:
    async with running_gateway(gateway_settings(tmp_path)) as gw:
        await check_history_figures(gw)


async def check_history_figures(gw: RunningGateway) -> None:
    bot = await gw.bot("miner")
    last = await emit(gw, bot, 3)
    epoch = gw.node.history_ring.epoch
    await resume(gw, f"{epoch}:{last - 1}")  # ok
    await resume(gw, f"other:{last}")  # not ok
    rest = Rest(gw.http, token("viewer", "ops"))
    try:
        status, figures = await rest.call("GET", "/api/performance")
        assert status == 200
        history = figures["history"]
        assert history["length"] == 3 and history["lastSeq"] == last
        assert history["oldestSeq"] == last - 2 and history["epoch"] == epoch
        assert history["recoveries"] == {"ok": 1, "failed": 1}
        assert history["dropped"] == 0 and history["connected"] is True
        status, text = await rest.call("GET", "/metrics")
        assert status == 200
        series = {line.split("{")[0]: line for line in text.splitlines() if "{" in line}
        assert series["aicraft_history_length"].endswith(" 3.0")
        assert series["aicraft_history_recoveries_failed"].endswith(" 1.0")
        assert "aicraft_history_last_seq" in series
    finally:
        await rest.close()


async def test_the_sdk_viewer_resumes_by_itself_with_its_subscription(gw: RunningGateway) -> None:
    home = await gw.bot("home")
    await home.send({"type": "pos", "x": 5, "y": 64, "z": 5, "dim": "overworld"})
    await home.roundtrip()
    got: list[dict[str, Any]] = []
    viewer = ViewerClient(gw.ws, token("viewer", "sdk"), on_message=got.append)
    await viewer.start()
    try:
        await viewer.subscribe(dim="overworld", area=[0, 0, 10, 10])
        await until(lambda: [m["type"] for m in got].count("snapshot") == 2, "the area's snapshot")
        first = await emit(gw, home, 2)
        await until(lambda: viewer.seq == first, "the live events")
        for peer in list(gw.node.hub.viewers):
            await peer.close(1001, "test restart")
        # Emitted while it is away (this loop turn: it cannot have reconnected yet).
        for i in range(3):
            gw.node.accept_event("home", "away", {"i": i})
        await until(lambda: viewer.recoveries["ok"] == 1, "the resume")
        await until(lambda: viewer.seq == first + 3, "the missed events")
        seqs = [m["seq"] for m in got if m["type"] == "event"]
        assert seqs == list(range(first - 1, first + 4))  # every event once, in order
        assert viewer.reconnects == 1
    finally:
        await viewer.close()


async def test_a_viewer_too_slow_for_its_queue_still_gets_every_event(tmp_path: Path) -> None:
    """Its queue overflows (dropped, resynced with a snapshot); the events it was not sent
    come again from the history, after the last one it was sent: no gap."""
    async with running_gateway(gateway_settings(tmp_path, tick_ms=0)) as gw:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # stop reading: stall soon
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.port))
        async with connect(
            f"{gw.ws}/ws/viewer?token={token('viewer', 'slow')}",
            sock=sock,
            max_queue=1,  # the client stops reading the socket while a message waits
            max_size=None,
        ) as ws:
            assert orjson.loads(await ws.recv())["type"] == "welcome"
            (viewer,) = gw.node.hub.viewers
            pad = "x" * 4000  # fat events fill the socket buffers sooner
            n = 0
            while viewer.messages_dropped == 0:
                assert n < 8000, "the viewer's queue never overflowed"
                gw.node.accept_event("npc", "fat", {"n": n, "pad": pad})
                n += 1
                if n % 50 == 0:
                    await asyncio.sleep(0)  # let its writer run (and block on the socket)
            for _ in range(20):  # a few more after the overflow
                gw.node.accept_event("npc", "fat", {"n": n, "pad": pad})
                n += 1
            got: list[int] = []
            snapshots = 0
            while len(got) < n:
                msg = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                if msg["type"] == "event":
                    got.append(msg["data"]["n"])
                snapshots += msg["type"] == "snapshot"
            assert got == list(range(n))  # every event once, in order, across the resync
            assert snapshots == 2  # the first one, and the resync's
