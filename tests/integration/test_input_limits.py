"""§5 over real sockets: what a hostile or sloppy client gets, and that it changes
nothing. Each test here failed before the fix it covers (issue #10)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.protocol import MAX_DEPTH, MAX_FRAME_BYTES
from tests.harness import Peer, Rest, RunningGateway, gateway_settings, running_gateway, token

HOUR_MS = 3_600_000


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gateway_settings(tmp_path, tick_ms=HOUR_MS)) as running:
        yield running


def nested(depth: int) -> dict[str, Any]:
    """A map nested `depth` levels deep (the map itself is level 1)."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


async def next_event(viewer: Peer) -> dict[str, Any]:
    return await viewer.recv_type("event")


# -- item 1: values JSON cannot carry -----------------------------------------------------------

NOT_JSON = [
    pytest.param({"blob": b"\x00\x01"}, id="bytes"),
    pytest.param({"ext": msgpack.ExtType(5, b"xyz")}, id="ext-type"),
    pytest.param({1: "int key"}, id="int-key"),
    pytest.param({"deep": [float("nan")]}, id="nan"),
    pytest.param({"inf": float("inf")}, id="inf"),
    pytest.param(nested(MAX_DEPTH + 1), id="depth-33"),
    pytest.param(nested(300), id="depth-300"),
]


@pytest.mark.parametrize("data", NOT_JSON)
async def test_event_data_json_cannot_carry_is_bad_message(gw: RunningGateway, data: Any) -> None:
    viewer, _ = await gw.viewer()
    bot = await gw.bot("packer", encoding="msgpack")
    await bot.ws.send(
        msgpack.packb({"type": "event", "name": "odd", "ref": 7, "data": data}, use_bin_type=True)
    )
    error = await bot.recv_type("error")
    assert error["code"] == "bad_message" and error["ref"] == 7
    # Nothing of it reached the viewer: the next event it sees is the good one.
    await bot.send({"type": "event", "name": "fine", "data": nested(MAX_DEPTH)})
    event = await next_event(viewer)
    assert event["name"] == "fine" and event["data"] == nested(MAX_DEPTH)


async def test_json_event_nesting_boundary(gw: RunningGateway) -> None:
    viewer, _ = await gw.viewer()
    bot = await gw.bot("deep")
    await bot.send({"type": "event", "name": "too-deep", "ref": 1, "data": nested(MAX_DEPTH + 1)})
    assert (await bot.recv_type("error"))["code"] == "bad_message"
    # orjson parses up to 1024 levels but writes only 254: a frame it cannot forward.
    await bot.ws.send('{"type":"event","name":"x","data":' + '{"a":' * 300 + "1" + "}" * 301)
    assert (await bot.recv_type("error"))["code"] == "bad_message"
    await bot.send({"type": "event", "name": "ok", "data": nested(MAX_DEPTH)})
    assert (await next_event(viewer))["name"] == "ok"


async def test_bad_event_before_welcome_is_an_error_not_a_500(gw: RunningGateway) -> None:
    ws = await connect(
        gw.ws + "/ws/npc",
        additional_headers={"Authorization": f"Bearer {token('npc', 'eager')}"},
        subprotocols=["aicraft.v1.msgpack"],  # type: ignore[list-item]
    )
    peer = Peer(ws, msgpack_encoding=True)
    # Sent at once, without waiting for `welcome`: these land among the early frames.
    await ws.send(msgpack.packb({"type": "event", "name": "e", "ref": 1, "data": {"b": b"x"}}))
    await ws.send(msgpack.packb({"type": "ping", "ref": 2}))
    assert (await peer.recv())["type"] == "welcome"
    assert (await peer.recv_type("error"))["code"] == "bad_message"
    assert (await peer.recv_type("pong"))["ref"] == 2
    await peer.close()


async def test_command_args_and_profiles_nested_too_deep_are_400(
    gw: RunningGateway, admin: Rest
) -> None:
    await gw.bot("target")
    # orjson reads 300 levels but cannot write them: the test writes this body by hand.
    deep = '{"a":' * 299 + "1" + "}" * 299
    status, body = await admin.call(
        "POST", "/api/npcs/target/commands", f'{{"action":"go","args":{deep}}}'
    )
    assert status == 400 and body["error"]["code"] == "bad_message"
    status, body = await admin.call(
        "POST", "/api/npcs/target/commands", {"action": "go", "args": nested(MAX_DEPTH + 1)}
    )
    assert status == 400 and body["error"]["code"] == "bad_message"
    status, _ = await admin.call(
        "POST", "/api/npcs/target/commands", {"action": "go", "args": nested(MAX_DEPTH)}
    )
    assert status == 202
    for bad in (deep, nested(MAX_DEPTH + 1)):
        status, body = await admin.call("PUT", "/api/npcs/target/profile", bad)
        assert status == 400 and body["error"]["code"] == "bad_message"
        assert (await admin.call("GET", "/api/npcs/target/profile"))[1] == {}
    status, body = await admin.call("PUT", "/api/npcs/target/profile", nested(MAX_DEPTH))
    assert status == 200 and body == nested(MAX_DEPTH)


# -- item 2: REST bodies read whole --------------------------------------------------------------


async def raw_http(gw: RunningGateway, head: str, parts: list[bytes]) -> tuple[int, bytes]:
    """Send a request head and its body in separate TCP writes; the status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(head.encode())
    for part in parts:
        writer.write(part)
        await writer.drain()
        # Shapes the stream (the server sees one segment before the next exists); nothing
        # waits on this for correctness.
        await asyncio.sleep(0.05)
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_body_in_two_segments_is_read_whole(gw: RunningGateway, admin: Rest) -> None:
    await admin.call("POST", "/api/npcs", {"id": "split", "role": "miner"})
    body = orjson.dumps({"notes": "n" * 3000, "level": 3})
    head = (
        "PUT /api/npcs/split/profile HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: Bearer {token('admin', 'ops')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    status, answer = await raw_http(gw, head, [body[:1000], body[1000:]])
    assert status == 200, answer
    assert (await admin.call("GET", "/api/npcs/split/profile"))[1]["level"] == 3


def chunked(parts: list[bytes]) -> list[bytes]:
    return [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts] + [b"0\r\n\r\n"]


async def test_chunked_bodies_are_read_whole_and_limited(gw: RunningGateway, admin: Rest) -> None:
    head = (
        "POST /api/npcs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: Bearer {token('admin', 'ops')}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    body = orjson.dumps({"id": "chunky", "role": "miner"})
    status, answer = await raw_http(gw, head, chunked([body[:7], body[7:]]))
    assert status == 201, answer
    big = b'{"id":"huge","role":"miner","pad":"' + b"p" * (5 << 19) + b'"}'  # 2.5 MiB
    status, answer = await raw_http(
        gw, head, chunked([big[i : i + 65536] for i in range(0, len(big), 65536)])
    )
    assert status == 413, answer
    assert orjson.loads(answer)["error"]["code"] == "too_large"
    assert (await admin.call("GET", "/api/npcs/huge"))[0] == 404


async def test_body_limit_boundary(gw: RunningGateway, admin: Rest) -> None:
    await admin.call("POST", "/api/npcs", {"id": "edge", "role": "miner"})
    limit = 64 * 1024
    core = orjson.dumps({"a": 1})
    exact = core + b" " * (limit - len(core))  # trailing spaces: still valid JSON
    assert (await admin.call("PUT", "/api/npcs/edge/profile", exact))[0] == 200
    status, body = await admin.call("PUT", "/api/npcs/edge/profile", exact + b" ")
    assert status == 413 and body["error"]["code"] == "too_large"


# -- item 3: acks only from the NPC the command went to ------------------------------------------


async def test_ack_from_another_npc_is_forbidden_and_changes_nothing(
    gw: RunningGateway, admin: Rest
) -> None:
    owner = await gw.bot("owner")
    other = await gw.bot("other")
    _, sent = await admin.call("POST", "/api/npcs/owner/commands", {"action": "dig"})
    command = await owner.recv_type("command")
    await owner.send({"type": "ack", "id": command["id"]})
    await owner.roundtrip()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while (await admin.call("GET", f"/api/commands/{sent['id']}"))[1]["status"] != "acked":
        assert loop.time() < deadline
        await asyncio.sleep(0.02)
    await other.send({"type": "ack", "id": sent["id"], "ref": "steal"})
    error = await other.recv_type("error")
    assert error == {
        "type": "error",
        "code": "forbidden",
        "message": error["message"],
        "ref": "steal",
    }
    _, record = await admin.call("GET", f"/api/commands/{sent['id']}")
    assert record["status"] == "acked" and record["npc"] == "owner"
    # An ack for an id nobody was sent is forbidden too; the owner's re-ack still works.
    await other.send({"type": "ack", "id": "f" * 32, "ref": 2})
    assert (await other.recv_type("error"))["code"] == "forbidden"
    await owner.send({"type": "ack", "id": sent["id"], "ref": 3})
    await owner.roundtrip()


async def test_command_ids_are_validated(gw: RunningGateway, admin: Rest) -> None:
    owner = await gw.bot("validated")
    _, sent = await admin.call("POST", "/api/npcs/validated/commands", {"action": "dig"})
    await owner.recv_type("command")
    await owner.send({"type": "ack", "id": sent["id"]})
    await owner.roundtrip()
    for bad in (f"{sent['id']}:ack", "x" * 5000, "NOT-HEX", sent["id"].upper()):
        status, body = await admin.call("GET", f"/api/commands/{bad}")
        assert status == 404 and body["error"]["code"] == "not_found", bad


# -- item 5: the frame limit is inclusive ----------------------------------------------------------


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_frames_up_to_64_kib_inclusive(gw: RunningGateway, encoding: str) -> None:
    bot = await gw.bot(f"framer-{encoding}", encoding)

    def frame(size: int) -> bytes:
        msg: dict[str, Any] = {"type": "ping", "ref": "edge", "pad": ""}
        empty = len(orjson.dumps(msg) if encoding == "json" else msgpack.packb(msg))
        # msgpack's str header grows by 2 bytes past 255 and by 2 more past 65535
        msg["pad"] = "p" * (size - empty - (0 if encoding == "json" else 2))
        data = orjson.dumps(msg) if encoding == "json" else msgpack.packb(msg)
        assert len(data) == size
        return data

    exact = frame(MAX_FRAME_BYTES)
    await bot.ws.send(exact.decode() if encoding == "json" else exact)
    assert (await bot.recv_type("pong"))["ref"] == "edge"
    over = frame(MAX_FRAME_BYTES + 1)
    await bot.ws.send(over.decode() if encoding == "json" else over)
    assert await bot.closed_with() == 1009


async def test_frame_limit_without_direct_dispatch(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bots on aiohttp's ordinary receive loop (used when its internals are not what direct_ws
    expects) have the same inclusive limit."""
    from gateway import bot_session, direct_ws

    monkeypatch.setattr(direct_ws._Switch, "enabled", False)
    bot = await gw.bot("plain")
    assert not isinstance(gw.node.hub.bots["plain"].ws, bot_session.DirectWebSocketResponse)
    msg = {"type": "ping", "ref": "edge", "pad": ""}
    msg["pad"] = "p" * (MAX_FRAME_BYTES - len(orjson.dumps(msg)))
    await bot.ws.send(orjson.dumps(msg).decode())
    assert (await bot.recv_type("pong"))["ref"] == "edge"
    msg["pad"] += "p"
    await bot.ws.send(orjson.dumps(msg).decode())
    assert await bot.closed_with() == 1009


async def test_viewer_frames_up_to_64_kib_inclusive(gw: RunningGateway) -> None:
    viewer, _ = await gw.viewer()
    msg = {"type": "ping", "ref": 1, "pad": ""}
    msg["pad"] = "p" * (MAX_FRAME_BYTES - len(orjson.dumps(msg)))
    await viewer.ws.send(orjson.dumps(msg).decode())
    assert (await viewer.recv_type("pong"))["ref"] == 1
    msg["pad"] += "p"
    await viewer.ws.send(orjson.dumps(msg).decode())
    assert await viewer.closed_with() == 1009


# -- item 9: 503 carries Retry-After ---------------------------------------------------------------


async def test_every_503_carries_retry_after(gw: RunningGateway) -> None:
    await gw.node.drain()
    rest = Rest(gw.http, token("npc", "late"))
    try:
        async with rest.session.get(gw.http + "/api/health") as resp:
            assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1
        for path in ("/ws/npc", "/ws/viewer"):
            tok = token("npc" if path == "/ws/npc" else "viewer", "late")
            with pytest.raises(InvalidStatus) as caught:
                await connect(gw.ws + path, additional_headers={"Authorization": f"Bearer {tok}"})
            assert caught.value.response.status_code == 503
            assert int(caught.value.response.headers["Retry-After"]) >= 1
    finally:
        await rest.close()


# -- item 10: allowed origins ----------------------------------------------------------------------


async def test_allowed_origins(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, allowed_origins=("https://map.example",))
    async with running_gateway(settings) as gw:
        headers = {"Authorization": f"Bearer {token('viewer', 'v')}"}
        with pytest.raises(InvalidStatus) as caught:
            await connect(
                gw.ws + "/ws/viewer", additional_headers=headers, origin="https://evil.example"
            )  # type: ignore[arg-type]
        assert caught.value.response.status_code == 403
        assert gw.node.hub.stats()["viewers"] == 0
        ok = await connect(
            gw.ws + "/ws/viewer", additional_headers=headers, origin="https://map.example"
        )  # type: ignore[arg-type]
        await ok.close()
        # A client that is not a browser sends no Origin: it is not a cross-site request.
        plain = await connect(gw.ws + "/ws/viewer", additional_headers=headers)
        await plain.close()


async def test_any_origin_when_unset(gw: RunningGateway) -> None:
    headers = {"Authorization": f"Bearer {token('npc', 'anywhere')}"}
    ws = await connect(gw.ws + "/ws/npc", additional_headers=headers, origin="https://any.example")  # type: ignore[arg-type]
    await ws.close()


def test_settings_read_allowed_origins() -> None:
    from gateway.config import Settings

    env = {
        "GATEWAY_SECRET": "s" * 32,
        "GATEWAY_ALLOWED_ORIGINS": " https://a.example, http://b:8080 ",
    }
    assert Settings.from_env(env).allowed_origins == ("https://a.example", "http://b:8080")
    assert Settings.from_env({"GATEWAY_SECRET": "s" * 32}).allowed_origins is None
    assert dataclasses.fields(Settings)  # a frozen dataclass: the field exists
