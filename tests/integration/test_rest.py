"""The REST API (docs/api.md) over real HTTP against a real gateway, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Rest, RunningGateway, gateway_settings, running_gateway, token


@pytest.fixture(params=["sqlite", "postgres"])
async def gw(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[RunningGateway]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    async with running_gateway(gateway_settings(tmp_path, database_url=url)) as running:
        yield running


async def test_npc_crud(gw: RunningGateway, admin: Rest) -> None:
    status, npc = await admin.call("POST", "/api/npcs", {"id": "miner_1", "role": "miner"})
    assert status == 201
    assert npc["id"] == "miner_1" and npc["name"] == "miner_1" and npc["role"] == "miner"
    assert npc["online"] is False and npc["x"] is None and npc["created_at"]
    assert (await admin.call("POST", "/api/npcs", {"id": "miner_1", "role": "miner"}))[0] == 409
    status, npc = await admin.call(
        "PATCH", "/api/npcs/miner_1", {"name": "Digger", "status": "idle"}
    )
    assert status == 200 and npc["name"] == "Digger" and npc["status"] == "idle"
    status, npc = await admin.call("GET", "/api/npcs/miner_1")
    assert status == 200 and npc["name"] == "Digger"  # the cache was invalidated
    assert (await admin.call("DELETE", "/api/npcs/miner_1"))[0] == 204
    status, body = await admin.call("GET", "/api/npcs/miner_1")
    assert status == 404 and body["error"]["code"] == "not_found"
    assert (await admin.call("DELETE", "/api/npcs/miner_1"))[0] == 404


@pytest.mark.parametrize(
    "body",
    [
        {"id": "bad id!", "role": "miner"},
        {"id": "x" * 65, "role": "miner"},
        {"id": "ok"},
        {"id": "ok", "role": "miner", "status": "NOPE"},
        {"id": "ok", "role": "miner", "name": ""},
        [1, 2],
        "not json",
    ],
)
async def test_create_rejects_bad_bodies(admin: Rest, body: object) -> None:
    raw = body if body == "not json" else None
    status, err = await admin.call("POST", "/api/npcs", raw or body)
    assert status == 400 and err["error"]["code"] == "bad_message"
    assert (await admin.call("GET", "/api/npcs"))[1]["npcs"] == []


async def test_list_filters_and_pagination(gw: RunningGateway, admin: Rest) -> None:
    for i in range(7):
        role = "miner" if i % 2 else "builder"
        await admin.call("POST", "/api/npcs", {"id": f"n{i}", "role": role, "status": "idle"})
    await admin.call("PATCH", "/api/npcs/n3", {"status": "mining"})
    bot = await gw.bot("n5")
    seen, cursor = [], None
    while True:
        path = "/api/npcs?limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, page = await admin.call("GET", path)
        assert status == 200 and len(page["npcs"]) <= 3
        seen += [n["id"] for n in page["npcs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"n{i}" for i in range(7)]
    _, miners = await admin.call("GET", "/api/npcs?role=miner")
    assert [n["id"] for n in miners["npcs"]] == ["n1", "n3", "n5"]
    _, mining = await admin.call("GET", "/api/npcs?status=mining")
    assert [n["id"] for n in mining["npcs"]] == ["n3"]
    _, online = await admin.call("GET", "/api/npcs?online=true")
    assert [n["id"] for n in online["npcs"]] == ["n5"]
    _, offline = await admin.call("GET", "/api/npcs?online=false&role=miner")
    assert [n["id"] for n in offline["npcs"]] == ["n1", "n3"]
    for bad in ("limit=0", "limit=501", "limit=x", "online=maybe", "cursor=%%%"):
        status, _ = await admin.call("GET", f"/api/npcs?{bad}")
        assert status == 400, bad
    await bot.close()


async def test_rest_shows_the_latest_position(gw: RunningGateway, admin: Rest) -> None:
    viewer, _ = await gw.viewer()
    bot = await gw.bot("scout")
    await bot.send({"type": "pos", "x": 12.5, "y": 70, "z": -3, "yaw": 45, "dim": "the_nether"})
    await viewer.recv_type("positions")
    _, npc = await admin.call("GET", "/api/npcs/scout")
    assert (npc["x"], npc["y"], npc["z"], npc["yaw"], npc["dim"]) == (
        12.5,
        70,
        -3,
        45,
        "the_nether",
    )
    assert npc["online"] is True and npc["role"] == "unknown"


async def test_delete_closes_the_bot_with_4404(gw: RunningGateway, admin: Rest) -> None:
    viewer, _ = await gw.viewer()
    bot = await gw.bot("doomed")
    await viewer.recv_type("joined")
    assert (await admin.call("DELETE", "/api/npcs/doomed"))[0] == 204
    assert await bot.closed_with() == 4404
    assert (await viewer.recv_type("left"))["id"] == "doomed"
    witness = await gw.bot("witness")
    await witness.send({"type": "status", "status": "watching"})
    following = await viewer.recv_until(lambda m: m["type"] in ("left", "status"))
    assert following["type"] == "status"  # exactly one `left` for the deleted NPC
    _, page = await admin.call("GET", "/api/npcs")
    assert [n["id"] for n in page["npcs"]] == ["witness"]


async def test_profiles(admin: Rest) -> None:
    assert (await admin.call("GET", "/api/npcs/ghost/profile"))[0] == 404
    await admin.call("POST", "/api/npcs", {"id": "learner", "role": "miner"})
    assert await admin.call("GET", "/api/npcs/learner/profile") == (200, {})
    profile = {"skills": {"mining": 3}, "notes": ["likes caves"]}
    assert await admin.call("PUT", "/api/npcs/learner/profile", profile) == (200, profile)
    assert await admin.call("GET", "/api/npcs/learner/profile") == (200, profile)
    status, _ = await admin.call("PUT", "/api/npcs/learner/profile", {"blob": "x" * 70_000})
    assert status == 413
    assert (await admin.call("PUT", "/api/npcs/learner/profile", [1]))[0] == 400
    assert await admin.call("GET", "/api/npcs/learner/profile") == (200, profile)


async def test_metrics_query(gw: RunningGateway, admin: Rest) -> None:
    bot = await gw.bot("m1", "msgpack")
    for i in range(5):
        await bot.send(
            {"type": "metric", "name": "health" if i % 2 else "food", "value": i, "ts": 10_000 + i}
        )
    await bot.send({"type": "event", "name": "task:completed", "data": {"task": "dig"}})
    await bot.roundtrip()
    assert await gw.node.metrics.flush_now(5.0)
    _, body = await admin.call("GET", "/api/metrics?npc=m1&name=health")
    assert body["metrics"] == [
        {"npc": "m1", "name": "health", "value": 3, "ts": 10_003},
        {"npc": "m1", "name": "health", "value": 1, "ts": 10_001},
    ]
    _, body = await admin.call("GET", "/api/metrics?npc=m1&since=10003")
    assert [m["value"] for m in body["metrics"]][-2:] == [4, 3]
    _, body = await admin.call("GET", "/api/metrics?name=task:completed")
    assert len(body["metrics"]) == 1
    assert (await admin.call("GET", "/api/metrics?limit=1001"))[0] == 400


async def test_auth_rules(gw: RunningGateway) -> None:
    anon, viewer, bot = (
        Rest(gw.http, None),
        Rest(gw.http, token("viewer", "v")),
        Rest(gw.http, token("npc", "b")),
    )
    try:
        assert (await anon.call("GET", "/api/health"))[0] == 200
        assert (await anon.call("GET", "/metrics"))[0] == 200
        status, err = await anon.call("GET", "/api/npcs")
        assert status == 401 and err["error"]["code"] == "unauthorized"
        assert (await viewer.call("GET", "/api/npcs"))[0] == 200
        assert (await bot.call("GET", "/api/performance"))[0] == 200
        status, err = await viewer.call("POST", "/api/npcs", {"id": "x", "role": "miner"})
        assert status == 403 and err["error"]["code"] == "forbidden"
        assert (await bot.call("DELETE", "/api/npcs/x"))[0] == 403
    finally:
        for rest in (anon, viewer, bot):
            await rest.close()


async def test_performance_has_every_contract_key(gw: RunningGateway, admin: Rest) -> None:
    await gw.bot("perf")
    status, perf = await admin.call("GET", "/api/performance")
    assert status == 200 and perf["replica"] == "r1"
    assert set(perf["database"]) >= {
        "backend",
        "activeConnections",
        "idleConnections",
        "queryTime",
        "writes",
    }
    assert set(perf["database"]["queryTime"]) == {"p50", "p95", "p99"}
    assert set(perf["cache"]) >= {"backend", "hitRate", "totalHits", "totalMisses"}
    assert set(perf["batchProcessor"]["positions"]) >= {
        "totalBatches",
        "itemsProcessed",
        "itemsCoalesced",
        "pendingItems",
    }
    assert set(perf["batchProcessor"]["metrics"]) >= {
        "totalBatches",
        "itemsProcessed",
        "pendingItems",
    }
    assert set(perf["workerPool"]) >= {
        "totalWorkers",
        "busyWorkers",
        "queuedTasks",
        "totalTasksProcessed",
    }
    assert isinstance(perf["circuitBreakers"], dict)
    assert perf["connections"] == {"npcs": 1, "viewers": 0}
    assert set(perf["bus"]) >= {"backend", "published", "received"}
    assert perf["database"]["backend"] == gw.node.store.backend


async def test_prometheus_text_parses(gw: RunningGateway, admin: Rest) -> None:
    await gw.bot("prom")
    status, text = await admin.call("GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["aicraft_connections_npcs"].samples[0].value == 1
    assert "aicraft_batch_processor_positions_items_processed" in families


async def test_health_and_unknown_routes(gw: RunningGateway, admin: Rest) -> None:
    assert await admin.call("GET", "/api/health") == (
        200,
        {"status": "ok", "replica": "r1", "degraded": []},
    )
    status, err = await admin.call("GET", "/api/nothing")
    assert status == 404 and err["error"]["code"] == "not_found"


async def test_rest_writes_are_rate_limited_per_token(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, rest_write_per_s=1.0, rest_write_burst=3)
    async with running_gateway(settings) as gw:
        first, second = Rest(gw.http, token("admin", "one")), Rest(gw.http, token("admin", "two"))
        try:
            codes = [
                (await first.call("POST", "/api/npcs", {"id": f"r{i}", "role": "miner"}))[0]
                for i in range(5)
            ]
            assert codes[:3] == [201, 201, 201] and 429 in codes[3:]
            status, body = await first.call("POST", "/api/npcs", {"id": "late", "role": "miner"})
            assert status == 429 and body["error"]["code"] == "rate_limited"
            assert (await first.call("GET", "/api/npcs"))[0] == 200  # reads are not limited
            assert (await second.call("POST", "/api/npcs", {"id": "x", "role": "miner"}))[0] == 201
        finally:
            await first.close()
            await second.close()


async def test_prometheus_has_histograms(gw: RunningGateway, admin: Rest) -> None:
    viewer, _ = await gw.viewer()
    bot = await gw.bot("histo")
    await bot.send({"type": "pos", "x": 1, "y": 2, "z": 3})
    await viewer.recv_type("positions")
    _, text = await admin.call("GET", "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "aicraft_tick_duration_seconds",
        "aicraft_broadcast_duration_seconds",
        "aicraft_ingest_to_send_seconds",
        "aicraft_viewer_send_delay_seconds",
    ):
        count = next(s.value for s in families[name].samples if s.name == f"{name}_count")
        assert count >= 1, name


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/npcs", {"id": "n0", "role": "miner", "name": "a\u0000b"}),
        ("GET", "/api/npcs?status=%00", None),
        ("GET", "/api/metrics?npc=%00", None),
        ("PUT", "/api/npcs/keep/profile", {"a": "\u0000"}),
    ],
)
async def test_nul_characters_are_refused_on_every_backend(
    admin: Rest, method: str, path: str, body: object
) -> None:
    await admin.call("POST", "/api/npcs", {"id": "keep", "role": "miner"})
    status, err = await admin.call(method, path, body)
    assert status == 400 and err["error"]["code"] == "bad_message"


async def test_huge_numbers_in_a_profile_read_back(admin: Rest) -> None:
    await admin.call("POST", "/api/npcs", {"id": "big", "role": "miner"})
    assert (await admin.call("PUT", "/api/npcs/big/profile", {"a": 1e308, "b": 1e20}))[0] == 200
    status, profile = await admin.call("GET", "/api/npcs/big/profile")
    assert status == 200 and profile == {"a": 1e308, "b": 1e20}


async def test_performance_answers_without_coalescing(tmp_path: Path) -> None:
    # GATEWAY_TICK_MS=0 (one write per update, the benchmark's "before") has its own writer:
    # /api/performance must report it like the coalescing one, dropped counter included.
    async with running_gateway(gateway_settings(tmp_path, tick_ms=0)) as gw:
        rest = Rest(gw.http, token("admin", "ops"))
        try:
            status, perf = await rest.call("GET", "/api/performance")
            assert status == 200
            assert perf["batchProcessor"]["positions"]["dropped"] == 0
        finally:
            await rest.close()
