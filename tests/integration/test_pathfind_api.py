"""POST /api/pathfind and /api/strategy/mining over a real socket, on a real worker pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.pathfind import mining_strategy, pathfind
from gateway.workers import WORKER_POOL, WorkerPool
from gateway.workers.world import encode_bitset
from tests.integration.test_worker_pool import gate, until


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    pool = WorkerPool(1, queue_max=0)  # no waiting room: a second concurrent request is busy
    app = web.Application()
    app[WORKER_POOL] = pool
    app.router.add_post("/api/pathfind", pathfind)
    app.router.add_post("/api/strategy/mining", mining_strategy)

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        await app[WORKER_POOL].start()
        yield
        await app[WORKER_POOL].close()

    app.cleanup_ctx.append(pool_ctx)
    async with TestClient(TestServer(app)) as c:
        yield c


FLOOR = encode_bitset((0, 0, 0), (6, 1, 6), lambda x, y, z: True)
WORLD = {"origin": [0, 0, 0], "size": [6, 1, 6], "solid": FLOOR}


async def test_pathfind_answers_path_result(
    client: TestClient[web.Request, web.Application],
) -> None:
    body = {"start": [0, 1, 0], "goal": [5, 1, 5], "world": WORLD}
    resp = await client.post("/api/pathfind", json=body)
    assert resp.status == 200
    result = await resp.json()
    assert result["type"] == "path_result" and result["ok"] is True
    assert result["cost"] == 10 and len(result["path"]) == 11
    assert result["path"][0] == [0, 1, 0] and result["path"][-1] == [5, 1, 5]
    assert {"expanded", "ms"} <= result.keys()

    resp = await client.post("/api/pathfind", json={**body, "goal": [5, 3, 5]})
    assert resp.status == 200
    assert (await resp.json())["error"] == "no_path"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        # No world is a search on the shared model (§9): only a bad `dim` is bad then.
        b'{"start": [0, 1, 0], "goal": [5, 1, 5], "dim": ""}',
        b'{"start": [0, 1], "goal": [5, 1, 5], "world": {"solid": []}}',
        b'{"start": [0, 1, 0], "goal": [5, 1, 5], "world": {"solid": [[0, 0, "x"]]}}',
        b'{"start": [0, 1, 0], "goal": [5, 1, 5], "world": {"solid": []}, "max_nodes": 0}',
    ],
)
async def test_pathfind_bad_message(
    client: TestClient[web.Request, web.Application], body: bytes
) -> None:
    resp = await client.post("/api/pathfind", data=body)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "bad_message"


async def test_mining_strategy(client: TestClient[web.Request, web.Application]) -> None:
    body = {
        "position": [0, 64, 0],
        "deposits": [
            {"x": 10, "y": 60, "z": 0, "kind": "diamond", "count": 1},
            {"x": 2, "y": 64, "z": 0, "kind": "coal", "count": 8},
            {"x": 0, "y": 0, "z": 0, "kind": "stone", "count": 99},
        ],
        "values": {"diamond": 100, "coal": 1},
        "top": 2,
    }
    resp = await client.post("/api/strategy/mining", json=body)
    assert resp.status == 200
    plan = (await resp.json())["plan"]
    assert [d["kind"] for d in plan] == ["diamond", "coal"]
    assert plan[0]["score"] > plan[1]["score"] > 0

    resp = await client.post("/api/strategy/mining", json={**body, "top": "all"})
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "bad_message"


async def test_busy_is_503(
    client: TestClient[web.Request, web.Application], tmp_path: Path
) -> None:
    # One worker, no waiting room: hold the worker with a gated task, then ask.
    pool = client.app[WORKER_POOL]
    door = tmp_path / "open"
    held = asyncio.ensure_future(pool.submit(gate, str(door), timeout_s=60))
    await until(lambda: pool.stats()["busyWorkers"] == 1, "the worker to be busy")
    body = {"start": [0, 1, 0], "goal": [0, 1, 0], "world": WORLD}
    resp = await client.post("/api/pathfind", json=body)
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "busy"
    resp = await client.post(
        "/api/strategy/mining", json={"position": [0, 0, 0], "deposits": [], "values": {}}
    )
    assert resp.status == 503
    door.touch()
    assert await held == "released"
    resp = await client.post("/api/pathfind", json=body)
    assert resp.status == 200 and (await resp.json())["cost"] == 0
