"""The shared world model over real sockets (§9): bots report sections and block changes,
paths need no world, REST shows what is known, the model survives a restart, and a section
reported on one replica is searched on another within 1 s (real Redis, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import time
import uuid
from pathlib import Path

import pytest

from gateway.simulate import Simulation
from gateway.testing.postgres_server import PostgresServer
from gateway.world.sections import SECTION_BYTES, section_of, set_bit
from tests.harness import (
    SECRET,
    Rest,
    RunningGateway,
    gateway_settings,
    running_gateway,
    token,
)


def floor(y: int = 0) -> bytes:
    """A section whose local layer `y` is solid: flat ground."""
    bits = bytearray(SECTION_BYTES)
    for lx, lz in itertools.product(range(16), repeat=2):
        set_bit(bits, section_of(lx, y, lz)[1], 1)
    return bytes(bits)


def chunk(cx: int, cy: int, cz: int, solid: bytes, as_text: bool = True) -> dict[str, object]:
    return {
        "type": "chunk",
        "dim": "overworld",
        "origin": [cx * 16, cy * 16, cz * 16],
        "solid": base64.b64encode(solid).decode() if as_text else solid,
    }


PATH = {"type": "path", "ref": 1, "start": [1, 65, 1], "goal": [30, 65, 1]}


async def test_paths_on_reported_sections_without_a_world(tmp_path: Path) -> None:
    async with running_gateway(gateway_settings(tmp_path)) as gw:
        bot = await gw.bot("scout")
        rest = Rest(gw.http, token("viewer", "v"))
        try:
            await bot.send(chunk(0, 4, 0, floor()))
            await bot.send(PATH)
            answer = await bot.recv_type("path_result", timeout=60)
            assert answer["ok"] is False and answer["error"] == "no_path"  # goal not known yet

            msgpack_bot = await gw.bot("scout2", encoding="msgpack")
            await msgpack_bot.send(chunk(1, 4, 0, floor(), as_text=False))
            await msgpack_bot.roundtrip()
            await bot.send(PATH)
            answer = await bot.recv_type("path_result", timeout=60)
            assert answer["ok"] is True and answer["cost"] == 29
            assert answer["path"][0] == [1, 65, 1] and answer["path"][-1] == [30, 65, 1]

            status, body = await rest.call("POST", "/api/pathfind", {**PATH, "dim": "overworld"})
            assert status == 200 and body["ok"] is True and body["cost"] == 29
            status, body = await rest.call("POST", "/api/pathfind", {**PATH, "dim": "the_end"})
            assert status == 200 and body["error"] == "no_path"

            # A wall across the whole floor (x = 20) cuts the path.
            wall = [[20, y, z, 1] for y in (65, 66, 67) for z in range(16)]
            await bot.send({"type": "blocks", "dim": "overworld", "changes": wall})
            await bot.send(PATH)
            answer = await bot.recv_type("path_result", timeout=60)
            assert answer["ok"] is False and answer["error"] == "no_path"

            status, body = await rest.call("GET", "/api/world/overworld")
            assert status == 200 and body == {"sections": 2, "bounds": [0, 64, 0, 31, 79, 15]}
            status, body = await rest.call("GET", "/api/world/overworld/heightmap?area=18,0,33,1")
            assert status == 200 and body["origin"] == [18, 0] and body["size"] == [16, 2]
            row = body["heights"][:16]
            assert row[:2] == [64, 64] and row[2] == 67 and row[13] == 64
            assert row[14:] == [None, None]  # x 32, 33: nobody reported them
        finally:
            await rest.close()


async def test_bad_world_input_is_rejected_and_changes_nothing(tmp_path: Path) -> None:
    async with running_gateway(gateway_settings(tmp_path)) as gw:
        bot = await gw.bot("scout")
        rest = Rest(gw.http, token("viewer", "v"))
        try:
            for bad in (
                {**chunk(0, 4, 0, floor()), "origin": [1, 64, 0]},
                {**chunk(0, 4, 0, floor()), "solid": base64.b64encode(b"\0" * 511).decode()},
                {"type": "blocks", "dim": "overworld", "changes": [[0, 64, 0, 2]]},
                {"type": "path", "ref": 9, "start": [0, 65, 0], "goal": [1, 65, 0], "dim": 5},
            ):
                await bot.send({**bad, "ref": 9})
                error = await bot.recv_type("error")
                assert error["code"] == "bad_message" and error["ref"] == 9
            await bot.roundtrip()
            assert (await rest.call("GET", "/api/world/overworld"))[1]["sections"] == 0
            for area in ("0,0,512,0", "0,0,1", "a,b,c,d", ""):
                status, body = await rest.call("GET", f"/api/world/overworld/heightmap?area={area}")
                assert status == 400 and body["error"]["code"] == "bad_message", area
            status, body = await rest.call("GET", "/api/world/overworld/heightmap?area=0,0,511,511")
            assert status == 200 and len(body["heights"]) == 512 * 512  # the limit itself is fine
            assert set(body["heights"]) == {None}
        finally:
            await rest.close()


async def test_the_model_survives_a_restart(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path)
    async with running_gateway(settings) as gw:
        bot = await gw.bot("scout")
        await bot.send(chunk(0, 4, 0, floor()))
        await bot.send(chunk(1, 4, 0, floor()))
        await bot.roundtrip()
    async with running_gateway(settings) as gw:  # the shutdown wrote the last tick
        rest = Rest(gw.http, token("viewer", "v"))
        try:
            status, body = await rest.call("POST", "/api/pathfind", {**PATH})
            assert status == 200 and body["ok"] is True and body["cost"] == 29
        finally:
            await rest.close()


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_section_is_searched_on_another_replica_within_a_second(
    redis_url: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    db = pg_server.create_database(f"wm_{uuid.uuid4().hex[:10]}")
    a = gateway_settings(tmp_path / "a", database_url=db, redis_url=redis_url, replica_id="ra")
    b = dataclasses.replace(a, data_dir=tmp_path / "b", replica_id="rb")
    async with running_gateway(a) as ga, running_gateway(b) as gb:
        bot = await ga.bot("scout")
        rest_b = Rest(gb.http, token("viewer", "v"))
        try:
            await bot.send(chunk(0, 4, 0, floor()))
            await bot.send(chunk(1, 4, 0, floor()))
            await bot.roundtrip()
            # The time it takes is a figure of `make bench-path` (no timed assertion here).
            await _searchable(gb, rest_b)
        finally:
            await rest_b.close()


async def _searchable(gw: RunningGateway, rest: Rest, deadline_s: float = 30.0) -> None:
    """Poll `gw` until a path over both sections is found there (with a deadline)."""
    end = time.monotonic() + deadline_s
    while True:
        status, body = await rest.call("POST", "/api/pathfind", dict(PATH))
        assert status == 200, body
        if body["ok"]:
            assert body["cost"] == 29
            return
        assert body["error"] == "no_path"  # not there yet
        assert time.monotonic() < end, "the other replica never searched the sections"
        await asyncio.sleep(0.01)  # poll interval of a deadline-bound wait


async def test_the_simulator_streams_its_terrain(tmp_path: Path) -> None:
    """Simulated bots report the sections of the terrain around them (§9): the model's
    heightmap is the simulator's own terrain, and a path on it needs no world."""
    async with running_gateway(gateway_settings(tmp_path)) as gw:
        sim = Simulation(gw.ws, SECRET, 2, prefix="mapper", nether_share=0.0, stream_world=True)
        rest = Rest(gw.http, token("viewer", "v"))
        try:
            await sim.start()
            npc = sim.npcs[0]
            x, z = npc.home
            terrain = npc.terrain

            async def reported() -> bool:
                _, body = await rest.call(
                    "GET", f"/api/world/overworld/heightmap?area={x - 8},{z},{x + 8},{z}"
                )
                heights = [terrain.height(x + dx, z) for dx in range(-8, 9)]
                return bool(body["heights"] == heights)

            end = time.monotonic() + 30
            while not await reported():
                assert time.monotonic() < end, "the terrain never reached the model"
                await asyncio.sleep(0.05)  # poll interval of a deadline-bound wait
            assert sim.sections_sent == len(sim.reported)  # each section once per fleet
        finally:
            await sim.stop()
            await rest.close()
