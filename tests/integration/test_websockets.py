"""The WebSocket contract (§3) over real sockets against real gateways (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
from websockets.exceptions import InvalidStatus

from gateway.direct_ws import DirectWebSocketResponse, dispatch_enabled
from tests.harness import Rest, RunningGateway, gateway_settings, running_gateway, token

HOUR_MS = 3_600_000  # a tick that never fires by itself: the test cuts windows


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def gw(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> AsyncIterator:
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    async with running_gateway(gateway_settings(tmp_path, database_url=url)) as running:
        yield running


@pytest.fixture
async def manual(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    """A gateway whose windows are cut only when the test calls `node.tick()`."""
    async with running_gateway(gateway_settings(tmp_path, tick_ms=HOUR_MS)) as running:
        yield running


async def test_bots_and_viewers_in_both_encodings(gw: RunningGateway) -> None:
    viewers = [(await gw.viewer(enc))[0] for enc in ("json", "msgpack", "json")]
    bots = {
        f"miner_{i}": await gw.bot(f"miner_{i}", enc)
        for i, enc in enumerate(["json", "msgpack"] * 3)
    }
    for i, bot in enumerate(bots.values()):
        await bot.send({"type": "pos", "x": i, "y": 64, "z": -i, "yaw": 90, "pitch": -10.5})
    for viewer in viewers:
        seen: dict[str, dict] = {}
        while len(seen) < len(bots):
            frame = await viewer.recv_type("positions")
            seen.update({u["id"]: u for u in frame["updates"]})
        for i, npc in enumerate(bots):
            assert seen[npc] == {
                "id": npc,
                "x": i,
                "y": 64,
                "z": -i,
                "yaw": 90,
                "pitch": -10.5,
                "dim": "overworld",
            }
    # A new viewer's snapshot has every bot, online, at its latest position.
    _, snapshot = await gw.viewer()
    by_id = {n["id"]: n for n in snapshot["npcs"]}
    assert set(by_id) == set(bots)
    assert all(n["online"] and n["x"] is not None for n in by_id.values())


async def test_bots_run_on_the_dispatch_path_configured(manual: RunningGateway) -> None:
    """`make test` runs this module twice: direct dispatch on, then GATEWAY_DIRECT_DISPATCH=0
    (aiohttp's ordinary receive loop, public send methods). Each run must be on its path."""
    bot = await manual.bot("which_path")
    await bot.send({"type": "ping", "ref": 1})
    assert (await bot.recv_type("pong"))["ref"] == 1
    session = manual.node.hub.bots["which_path"]
    direct = isinstance(session.ws, DirectWebSocketResponse)
    assert direct is manual.node.settings.direct_dispatch is dispatch_enabled()


async def test_window_coalesces_to_latest_per_npc(manual: RunningGateway) -> None:
    viewer, _ = await manual.viewer()
    bot = await manual.bot("scout")
    for i in range(10):
        await bot.send({"type": "pos", "x": i, "y": 70, "z": 0})
    await bot.roundtrip()
    manual.node.tick()
    frame = await viewer.recv_type("positions")
    assert [u["id"] for u in frame["updates"]] == ["scout"]
    assert frame["updates"][0]["x"] == 9
    stats = manual.node.batch_stats()["positions"]
    assert stats["itemsCoalesced"] == 9 and stats["itemsProcessed"] == 10


async def test_positions_keep_order_and_the_last_one_arrives(gw: RunningGateway) -> None:
    viewer, _ = await gw.viewer("msgpack")
    bot = await gw.bot("walker", "msgpack")
    for i in range(200):
        await bot.send({"type": "pos", "x": i, "y": 64, "z": 0})
        if i % 40 == 0:
            await asyncio.sleep(0.05)  # spread over several ticks (pacing, not synchronisation)
    xs: list[float] = []
    while not xs or xs[-1] != 199:
        frame = await viewer.recv_type("positions")
        xs.extend(u["x"] for u in frame["updates"] if u["id"] == "walker")
    assert xs == sorted(xs)
    assert len(xs) < 200  # coalesced


async def test_area_subscription_filters_and_resnapshots(gw: RunningGateway) -> None:
    viewer, _ = await gw.viewer()
    inside, outside = await gw.bot("inside"), await gw.bot("outside")
    await inside.send({"type": "pos", "x": 10, "y": 64, "z": 10})
    await outside.send({"type": "pos", "x": 5000, "y": 64, "z": 10})
    await inside.roundtrip()
    await outside.roundtrip()
    await viewer.recv_until(lambda m: m.get("type") == "positions" and len(m["updates"]) == 2)
    await viewer.send({"type": "subscribe", "dim": "overworld", "area": [0, 0, 100, 100]})
    snap = await viewer.recv_type("snapshot")
    assert [n["id"] for n in snap["npcs"]] == ["inside"]
    await inside.send({"type": "pos", "x": 11, "y": 64, "z": 10})
    await outside.send({"type": "pos", "x": 5001, "y": 64, "z": 10})
    await outside.send({"type": "pos", "x": 20, "y": 64, "z": 20, "dim": "the_nether"})
    frame = await viewer.recv_type("positions")
    assert {u["id"] for u in frame["updates"]} == {"inside"}
    await viewer.send({"type": "subscribe"})
    snap = await viewer.recv_type("snapshot")
    assert {n["id"] for n in snap["npcs"]} == {"inside", "outside"}


async def test_second_connection_replaces_the_first_with_4409(gw: RunningGateway) -> None:
    viewer, _ = await gw.viewer()
    first = await gw.bot("builder")
    await viewer.recv_type("joined")
    second = await gw.bot("builder")
    assert await first.closed_with() == 4409
    await second.send({"type": "pos", "x": 1, "y": 2, "z": 3})
    msg = await viewer.recv_until(lambda m: m["type"] in ("left", "positions"))
    assert msg["type"] == "positions"  # no `left`: the NPC never went offline
    await second.roundtrip()


async def test_status_event_and_joined_left_reach_viewers(gw: RunningGateway) -> None:
    viewer, _ = await gw.viewer()
    bot = await gw.bot("farmer")
    assert (await viewer.recv_type("joined"))["id"] == "farmer"
    await bot.send({"type": "status", "status": "harvesting"})
    assert await viewer.recv_type("status") == {
        "type": "status",
        "id": "farmer",
        "status": "harvesting",
    }
    await bot.send({"type": "event", "name": "chat", "data": {"text": "hi"}})
    event = await viewer.recv_type("event")
    assert event == {
        "type": "event",
        "npc": "farmer",
        "name": "chat",
        "data": {"text": "hi"},
        "epoch": gw.node.history_ring.epoch,
        "seq": 1,
    }
    await bot.close()
    assert (await viewer.recv_type("left"))["id"] == "farmer"
    rest = Rest(gw.http, token("viewer", "v"))
    try:
        status, npc = await rest.call("GET", "/api/npcs/farmer")
        assert status == 200 and npc["status"] == "harvesting" and npc["online"] is False
    finally:
        await rest.close()


BAD_FRAMES = [
    ("not json {", "bad_encoding"),
    ("[1, 2]", "bad_message"),
    ('{"type": 5}', "bad_message"),
    ('{"type": "teleport"}', "unknown_type"),
    ('{"type": "pos", "x": 1, "y": 2}', "bad_message"),
    ('{"type": "pos", "x": true, "y": 2, "z": 3}', "bad_message"),
    ('{"type": "pos", "x": 1e300, "y": 2, "z": 3}', "bad_message"),
    ('{"type": "pos", "x": 1, "y": 5000, "z": 3}', "bad_message"),
    ('{"type": "pos", "x": 1, "y": 2, "z": 3, "dim": 7}', "bad_message"),
    ('{"type": "status", "status": "Not Valid!"}', "bad_message"),
    ('{"type": "metric", "name": "hp", "value": "full"}', "bad_message"),
    ('{"type": "event", "name": "x", "data": [1]}', "bad_message"),
    ('{"type": "ack"}', "bad_message"),
    ('{"type": "metric", "name": "x", "value": 1, "ts": 1e300}', "bad_message"),
    ('{"type": "pos", "x": 1, "y": 2, "z": 3, "npc": "someone_else"}', "forbidden"),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES)
async def test_bad_messages_get_errors_and_change_nothing(
    manual: RunningGateway, frame: str, code: str
) -> None:
    viewer, _ = await manual.viewer()
    bot = await manual.bot("tester")
    await bot.send({"type": "pos", "x": 1, "y": 64, "z": 1})
    await bot.roundtrip()
    manual.node.tick()
    await viewer.recv_type("positions")
    await bot.ws.send(frame)
    error = await bot.recv_type("error")
    assert error["code"] == code and error["message"]
    await bot.roundtrip()  # the connection still works
    manual.node.tick()
    assert manual.node.live["tester"]["x"] == 1 and manual.node.live["tester"]["y"] == 64
    assert manual.node.coalescer.pending == 0


async def test_error_carries_the_ref(manual: RunningGateway) -> None:
    bot = await manual.bot("reffy", "msgpack")
    await bot.send({"type": "pos", "ref": "r-1", "x": math.inf, "y": 0, "z": 0})
    assert await bot.recv_type("error") == {
        "type": "error",
        "code": "bad_message",
        "message": "x must be finite",
        "ref": "r-1",
    }
    await bot.ws.send("text frame on msgpack")
    assert (await bot.recv_type("error"))["code"] == "bad_encoding"
    await bot.send({"type": "ping", "ref": 42})
    assert await bot.recv_type("pong") == {"type": "pong", "ref": 42}


async def test_frame_over_64_kib_closes_with_1009(manual: RunningGateway) -> None:
    bot = await manual.bot("big")
    await bot.send({"type": "event", "name": "dump", "data": {"blob": "x" * 70_000}})
    assert await bot.closed_with() == 1009


async def test_flooding_bot_is_rate_limited_then_closed(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, tick_ms=HOUR_MS, rate_per_s=20.0, rate_burst=10)
    async with running_gateway(settings) as gw:
        polite = await gw.bot("polite")
        flooder = await gw.bot("flooder")
        for _ in range(50):
            await flooder.send({"type": "pos", "x": 0, "y": 0, "z": 0})
        error = await flooder.recv_type("error")
        assert error["code"] == "rate_limited"
        assert gw.node.coalescer.items_processed < 50
        await polite.roundtrip()  # others are unaffected


async def test_path_without_workers_or_with_bad_world_is_answered(manual: RunningGateway) -> None:
    bot = await manual.bot("pathy")
    await bot.send(
        {
            "type": "path",
            "ref": 1,
            "start": [0, 1, 0],
            "goal": [1, 1, 0],
            "world": {"solid": "nope"},
        }
    )
    # The world is decoded in a worker (a big one must not block the loop): allow for the
    # pool's first warm-up on a loaded machine.
    reply = await bot.recv_until(lambda m: m.get("ref") == 1, timeout=60)
    assert reply["type"] == "error" and reply["code"] in ("bad_message", "unavailable"), reply
    await bot.roundtrip()


@pytest.mark.parametrize(
    ("path", "tok", "status"),
    [
        ("/ws/npc", None, 401),
        ("/ws/npc", "garbage", 401),
        ("/ws/npc", token("viewer", "v"), 403),
        ("/ws/npc", token("npc", "bad id!"), 403),
        ("/ws/viewer", token("npc", "miner"), 403),
        ("/ws/viewer", "expired", 401),
        ("/ws/viewer", "forged", 401),
    ],
)
async def test_bad_tokens_are_refused_before_the_upgrade(
    manual: RunningGateway, path: str, tok: str | None, status: int
) -> None:
    import jwt

    if tok == "expired":
        tok = token("viewer", "v", ttl_s=-10)
    elif tok == "forged":
        tok = jwt.encode(
            {"sub": "v", "role": "admin", "exp": 2**40},
            "wrong-secret-" + "y" * 32,
            algorithm="HS256",
        )
    with pytest.raises(InvalidStatus) as info:
        await manual.peer(path, tok)
    assert info.value.response.status_code == status


async def test_query_token_and_default_json_encoding(manual: RunningGateway) -> None:
    peer = await manual.peer(f"/ws/viewer?token={token('admin', 'ops')}", None, encoding="")
    assert (await peer.recv())["type"] == "welcome"


async def test_metrics_are_batched_into_the_store(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, metrics_batch=5, metrics_flush_ms=HOUR_MS)
    async with running_gateway(settings) as gw:
        bot = await gw.bot("counter", "msgpack")
        for i in range(12):
            await bot.send({"type": "metric", "name": "ore", "value": i, "ts": 1_000 + i})
        await bot.roundtrip()
        rest = Rest(gw.http, token("admin", "ops"))
        try:
            deadline = asyncio.get_running_loop().time() + 5
            while gw.node.metrics.items_processed < 10:
                assert asyncio.get_running_loop().time() < deadline, "batches not written"
                await asyncio.sleep(0.02)
            assert gw.node.metrics.pending == 2  # a partial batch waits for the timer
            _, body = await rest.call("GET", "/api/metrics?npc=counter&limit=3")
            assert [m["value"] for m in body["metrics"]] == [9, 8, 7]
        finally:
            await rest.close()


async def test_msgpack_binary_roundtrip_of_snapshot(manual: RunningGateway) -> None:
    bot = await manual.bot("packer", "msgpack")
    await bot.send({"type": "pos", "x": 1.5, "y": -60, "z": 2.25, "dim": "the_end"})
    await bot.roundtrip()
    manual.node.tick()
    _, snapshot = await manual.viewer("msgpack")
    (npc,) = snapshot["npcs"]
    assert (npc["x"], npc["y"], npc["z"], npc["dim"]) == (1.5, -60, 2.25, "the_end")
    assert isinstance(msgpack.packb(snapshot), bytes)


async def test_viewer_flood_is_rate_limited(manual: RunningGateway) -> None:
    viewer, _ = await manual.viewer()
    for _ in range(40):
        await viewer.send({"type": "ping"})
    assert (await viewer.recv_type("error"))["code"] == "rate_limited"


async def test_welcome_then_snapshot_even_while_events_flow(manual: RunningGateway) -> None:
    chatty = await manual.bot("chatty")
    for i in range(30):
        await chatty.send({"type": "status", "status": f"s{i}"})
        peer = await manual.peer("/ws/viewer", token("viewer", f"v{i}"))
        kinds = [(await peer.recv())["type"], (await peer.recv())["type"]]
        assert kinds == ["welcome", "snapshot"]
        await peer.close()


async def test_path_over_the_bot_socket(manual: RunningGateway) -> None:
    bot = await manual.bot("walker", "msgpack")
    floor = [[x, 0, z] for x in range(5) for z in range(3)]
    wall = [[2, 1, z] for z in range(3)]  # a one-block step to climb over
    await bot.send(
        {
            "type": "path",
            "ref": "p1",
            "start": [0, 1, 1],
            "goal": [4, 1, 1],
            "world": {"solid": floor + wall},
        }
    )
    result = await bot.recv_until(lambda m: m.get("ref") == "p1", timeout=120)
    assert result["type"] == "path_result" and result["ok"] is True, result
    assert result["path"][0] == [0, 1, 1] and result["path"][-1] == [4, 1, 1]
    assert [2, 2, 1] in result["path"]  # over the wall: up (2) and down (1 + 1)
    assert result["cost"] == 1 + 2 + 2 + 1
    await bot.send(
        {
            "type": "mining_plan",
            "ref": "m1",
            "position": [0, 64, 0],
            "deposits": [
                {"x": 10, "y": 60, "z": 0, "kind": "iron", "count": 3},
                {"x": 2, "y": 64, "z": 0, "kind": "coal", "count": 5},
            ],
            "values": {"iron": 10, "coal": 1},
        }
    )
    plan = await bot.recv_until(lambda m: m.get("ref") == "m1", timeout=60)
    assert plan["type"] == "mining_plan_result" and plan["ok"] is True
    assert [d["kind"] for d in plan["plan"]] == ["iron", "coal"]


async def test_persistent_flooding_closes_with_1008(tmp_path: Path) -> None:
    settings = gateway_settings(
        tmp_path, tick_ms=HOUR_MS, rate_per_s=20.0, rate_burst=10, flood_close_s=1.0
    )
    async with running_gateway(settings) as gw:
        flooder = await gw.bot("hose")
        polite = await gw.bot("sipper")

        async def flood() -> None:
            with contextlib.suppress(Exception):
                while True:
                    await flooder.send({"type": "pos", "x": 0, "y": 0, "z": 0})
                    await asyncio.sleep(0.001)

        hose = asyncio.create_task(flood())
        try:
            assert await flooder.closed_with(timeout=10) == 1008
        finally:
            hose.cancel()
        await polite.roundtrip()  # the well-behaved bot on the same replica is fine
        telemetry = gw.node.telemetry.registry
        assert telemetry.get_sample_value("aicraft_messages_rate_limited_total") > 0
