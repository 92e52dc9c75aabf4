"""The Store contract, run against every backend: SQLite in a temp dir and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.store.base import NpcExists, Store, StoreUnavailable
from gateway.store.common import NPC_COLUMNS
from gateway.store.migrations import discover
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from gateway.testing.postgres_server import PostgresServer
from gateway.types import MetricRow, PositionUpdate

T = TypeVar("T")

NPC_KEYS = set(NPC_COLUMNS)


def make_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path, **kw: Any) -> Store:
    if backend == "sqlite":
        return SqliteStore(tmp_path / "sub" / "gateway.sqlite3", **kw)
    url: str = request.getfixturevalue("pg_url")
    return PostgresStore(url, pool_max=5, **kw)


BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Store]:
    s = make_store(backend, request, tmp_path)
    await s.open()
    yield s
    await s.close()


def pos(npc_id: str, x: float, dim: str = "overworld") -> PositionUpdate:
    return {"id": npc_id, "x": x, "y": 64.5, "z": -x, "yaw": 90.25, "pitch": -12.5, "dim": dim}


async def eventually(fn: Callable[[], Awaitable[T]], deadline_s: float = 30.0) -> T:
    """Call `fn` until it stops raising StoreUnavailable, within a deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await fn()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)  # poll interval


# -- registry -------------------------------------------------------------------------------------
async def test_ensure_registers_unknown_npc_once(store: Store) -> None:
    npc = await store.ensure_npc("bot-1")
    assert set(npc) == NPC_KEYS
    assert (npc["id"], npc["name"], npc["role"], npc["status"]) == (
        "bot-1",
        "bot-1",
        "unknown",
        "unknown",
    )
    assert all(npc[k] is None for k in ("x", "y", "z", "yaw", "pitch", "dim"))
    assert npc["created_at"].endswith("+00:00") and "T" in npc["created_at"]
    await store.set_status("bot-1", "online")
    again = await store.ensure_npc("bot-1")
    assert again["status"] == "online"
    assert again["created_at"] == npc["created_at"]


async def test_create_get_and_duplicate(store: Store) -> None:
    created = await store.create_npc("miner.01", "Miner One", "miner", "offline")
    assert created["name"] == "Miner One" and created["role"] == "miner"
    assert await store.get_npc("miner.01") == created
    assert await store.get_npc("nobody") is None
    with pytest.raises(NpcExists):
        await store.create_npc("miner.01", "Other", "guard", "offline")
    await store.ensure_npc("seen")
    with pytest.raises(NpcExists):
        await store.create_npc("seen", "Seen", "guard", "offline")


async def test_list_filters_and_pagination(store: Store) -> None:
    # Upper case sorts before lower case byte-wise: both backends must agree on that order.
    ids = [f"n{i:03d}" for i in range(25)] + ["A-first", "Z_mid", "a.low"]
    for i, npc_id in enumerate(ids):
        role = "miner" if i % 2 else "guard"
        status = "online" if i % 3 == 0 else "offline"
        await store.create_npc(npc_id, npc_id.upper(), role, status)

    everything = await store.list_npcs(limit=1000)
    assert [n["id"] for n in everything] == sorted(ids, key=lambda s: s.encode())

    seen: list[str] = []
    after: str | None = None
    while True:
        page = await store.list_npcs(after_id=after, limit=7)
        if not page:
            break
        seen += [n["id"] for n in page]
        after = page[-1]["id"]
    assert seen == [n["id"] for n in everything]

    miners = await store.list_npcs(role="miner", limit=1000)
    assert miners and all(n["role"] == "miner" for n in miners)
    online_guards = await store.list_npcs(role="guard", status="online", limit=1000)
    expected = {i for j, i in enumerate(ids) if j % 2 == 0 and j % 3 == 0}
    assert {n["id"] for n in online_guards} == expected

    only = await store.list_npcs(only_ids=["n003", "n001", "ghost"])
    assert [n["id"] for n in only] == ["n001", "n003"]
    assert await store.list_npcs(only_ids=[]) == []
    rest = await store.list_npcs(exclude_ids={"n000", "A-first"}, limit=1000)
    assert {n["id"] for n in rest} == set(ids) - {"n000", "A-first"}
    assert [n["id"] for n in await store.list_npcs(limit=2)] == ["A-first", "Z_mid"]
    assert await store.list_npcs(after_id="Z_mid", limit=1) == [await store.get_npc("a.low")]
    assert await store.list_npcs(after_id="n024") == []


async def test_update_and_set_status(store: Store) -> None:
    await store.create_npc("u1", "U", "miner", "offline")
    updated = await store.update_npc("u1", {"name": "Renamed", "status": "online"})
    assert updated is not None
    assert (updated["name"], updated["role"], updated["status"]) == ("Renamed", "miner", "online")
    assert updated["updated_at"] >= updated["created_at"]
    assert await store.get_npc("u1") == updated
    assert await store.update_npc("ghost", {"name": "x"}) is None
    with pytest.raises(ValueError):
        await store.update_npc("u1", {"x": 1.0})
    assert await store.set_status("u1", "busy") is True
    assert await store.set_status("ghost", "busy") is False
    npc = await store.get_npc("u1")
    assert npc is not None and npc["status"] == "busy"


async def test_delete_cascades_and_positions_do_not_resurrect(store: Store) -> None:
    await store.create_npc("d1", "D", "miner", "online")
    await store.create_npc("keep", "K", "miner", "online")
    await store.put_profile("d1", {"skill": 3})
    await store.insert_metrics(
        [MetricRow("d1", "ore", 1.0, 1000), MetricRow("keep", "ore", 2.0, 1)]
    )
    assert await store.delete_npc("d1") is True
    assert await store.delete_npc("d1") is False
    assert await store.get_npc("d1") is None
    assert await store.get_profile("d1") is None
    assert await store.query_metrics(npc="d1") == []
    assert await store.query_metrics(npc="keep") == [MetricRow("keep", "ore", 2.0, 1)]

    await store.write_positions([pos("d1", 5.0), pos("keep", 6.0)])
    assert await store.get_npc("d1") is None
    kept = await store.get_npc("keep")
    assert kept is not None and kept["x"] == 6.0
    assert [n["id"] for n in await store.list_npcs()] == ["keep"]


async def test_write_positions_stores_latest(store: Store) -> None:
    await store.create_npc("p1", "P", "miner", "online")
    before = await store.get_npc("p1")
    assert before is not None
    await store.write_positions([pos("p1", 1.0), pos("ghost", 2.0), pos("p1", 3.25, "nether")])
    after = await store.get_npc("p1")
    assert after is not None
    assert (after["x"], after["y"], after["z"]) == (3.25, 64.5, -3.25)
    assert (after["yaw"], after["pitch"], after["dim"]) == (90.25, -12.5, "nether")
    assert after["updated_at"] >= before["updated_at"]
    assert after["created_at"] == before["created_at"]
    assert await store.get_npc("ghost") is None
    await store.write_positions([])


async def test_write_positions_takes_whole_numbers_as_bots_send_them(store: Store) -> None:
    """Positions keep a bot's integers (parse_position does not widen them): stored all the same."""
    await store.create_npc("p2", "P", "miner", "online")
    update = {"id": "p2", "x": 12, "y": 64, "z": -3, "yaw": 90, "pitch": 0, "dim": "overworld"}
    await store.write_positions([update])  # type: ignore[list-item]
    after = await store.get_npc("p2")
    assert after is not None
    assert (after["x"], after["y"], after["z"], after["yaw"], after["pitch"]) == (12, 64, -3, 90, 0)


async def test_write_positions_batch_of_1000(store: Store) -> None:
    ids = [f"bot{i:04d}" for i in range(1000)]
    for npc_id in ids:
        await store.ensure_npc(npc_id)
    writes = store.stats()["writes"]
    await store.write_positions([pos(npc_id, float(i) + 0.125) for i, npc_id in enumerate(ids)])
    assert store.stats()["writes"] == writes + 1  # one statement for the whole batch
    listed = await store.list_npcs(limit=1000)
    assert [n["x"] for n in listed] == [float(i) + 0.125 for i in range(1000)]
    assert all(n["dim"] == "overworld" for n in listed)


# -- profiles -------------------------------------------------------------------------------------
async def test_profiles(store: Store) -> None:
    await store.create_npc("l1", "L", "miner", "online")
    assert await store.get_profile("l1") is None
    profile = {"skills": {"mining": 0.75}, "seen": [1, 2, 3], "note": "héllo"}
    assert await store.put_profile("l1", profile) == profile
    assert await store.get_profile("l1") == profile
    assert await store.put_profile("l1", {"v": 2}) == {"v": 2}
    assert await store.get_profile("l1") == {"v": 2}
    with pytest.raises(KeyError):
        await store.put_profile("ghost", {"v": 1})


async def test_update_profile_is_atomic(store: Store) -> None:
    await store.create_npc("a1", "A", "miner", "online")

    def bump(p: dict[str, Any]) -> dict[str, Any]:
        return {**p, "n": p.get("n", 0) + 1}

    update = store.update_profile  # type: ignore[attr-defined]
    await asyncio.gather(*(update("a1", bump) for _ in range(20)))
    assert await store.get_profile("a1") == {"n": 20}
    with pytest.raises(KeyError):
        await update("ghost", bump)


# -- metrics --------------------------------------------------------------------------------------
async def test_metrics(store: Store) -> None:
    await store.create_npc("m1", "M1", "miner", "online")
    await store.create_npc("m2", "M2", "miner", "online")
    rows = [MetricRow("m1", "ore", float(i), 1_000 + i) for i in range(10)]
    rows += [MetricRow("m2", "ore", 0.5, 1_005), MetricRow("m1", "hp", 20.0, 1_020)]
    rows += [MetricRow("ghost", "ore", 1.0, 1_030)]  # unknown NPC: dropped
    await store.insert_metrics(rows)
    await store.insert_metrics([])

    newest = await store.query_metrics()
    assert newest[0] == MetricRow("m1", "hp", 20.0, 1_020)
    assert len(newest) == 12
    assert [r.ts for r in newest] == sorted((r.ts for r in newest), reverse=True)

    m1_ore = await store.query_metrics(npc="m1", name="ore", limit=3)
    assert m1_ore == [MetricRow("m1", "ore", float(i), 1_000 + i) for i in (9, 8, 7)]
    assert await store.query_metrics(npc="m2") == [MetricRow("m2", "ore", 0.5, 1_005)]
    since = await store.query_metrics(since_ms=1_008, limit=100)
    assert {r.ts for r in since} == {1_008, 1_009, 1_020}
    assert await store.query_metrics(name="hp") == [MetricRow("m1", "hp", 20.0, 1_020)]
    assert isinstance(newest[0].ts, int) and isinstance(newest[0].value, float)


# -- migrations and figures -----------------------------------------------------------------------
async def test_migrate_is_idempotent(store: Store, backend: str) -> None:
    assert await store.migrate() == []
    assert await store.migrate() == []
    assert discover(backend)  # type: ignore[arg-type]


@pytest.mark.postgres
async def test_concurrent_migrations_apply_once(pg_url: str) -> None:
    a = PostgresStore(pg_url, pool_max=2, auto_migrate=False)
    b = PostgresStore(pg_url, pool_max=2, auto_migrate=False)
    await a.open()
    await b.open()
    try:
        first, second = await asyncio.gather(a.migrate(), b.migrate())
        names = [m.name for m in discover("postgres")]
        assert sorted([first, second], key=len) == [[], names]
        await a.create_npc("x", "X", "miner", "online")
        assert await b.get_npc("x") is not None
    finally:
        await a.close()
        await b.close()


async def test_stats(store: Store, backend: str) -> None:
    await store.ensure_npc("s1")
    stats = store.stats()
    assert stats["backend"] == backend
    assert set(stats) >= {"backend", "activeConnections", "idleConnections", "queryTime", "writes"}
    assert set(stats["queryTime"]) == {"p50", "p95", "p99"}
    assert 0 <= stats["queryTime"]["p50"] <= stats["queryTime"]["p95"] <= stats["queryTime"]["p99"]
    assert stats["writes"] >= 1
    assert stats["activeConnections"] == 0
    assert stats["idleConnections"] >= 1


async def test_sqlite_creates_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "g.sqlite3"
    s = SqliteStore(path)
    await s.open()
    try:
        await s.ensure_npc("x")
    finally:
        await s.close()
    assert path.exists()
    with pytest.raises(StoreUnavailable):
        await s.get_npc("x")


# -- outage ---------------------------------------------------------------------------------------
@pytest.fixture
def own_pg_server() -> Any:
    """A server of this test's own, so stopping it leaves the session's server alone."""
    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.mark.postgres
async def test_open_fails_while_server_is_down(own_pg_server: PostgresServer) -> None:
    url = own_pg_server.create_database("down")
    own_pg_server.stop()
    s = PostgresStore(url, connect_timeout=2.0)
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(s.open(), timeout=15)
    own_pg_server.start()
    await eventually(s.open)
    try:
        assert (await s.ensure_npc("back"))["id"] == "back"
    finally:
        await s.close()


@pytest.mark.postgres
async def test_same_store_recovers_after_restart(own_pg_server: PostgresServer) -> None:
    url = own_pg_server.create_database(f"o_{uuid.uuid4().hex[:8]}")
    s = PostgresStore(url, pool_max=4, connect_timeout=2.0, acquire_timeout=2.0)
    await s.open()
    try:
        await s.create_npc("o1", "O", "miner", "online")
        # Fill the pool so every pooled connection goes stale when the server stops.
        await asyncio.gather(*(s.list_npcs() for _ in range(8)))
        assert s.stats()["idleConnections"] == 4

        own_pg_server.stop()
        # Each call fails fast; wait_for only guards against a hang.
        for call in (
            lambda: s.get_npc("o1"),
            lambda: s.write_positions([pos("o1", 1.0)]),
            lambda: s.insert_metrics([MetricRow("o1", "ore", 1.0, 1)]),
        ):
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(call(), timeout=15)

        own_pg_server.start()
        await eventually(lambda: s.get_npc("o1"))
        # Every pooled connection works again, not only the first.
        results = await asyncio.gather(*(s.get_npc("o1") for _ in range(8)))
        assert all(r is not None and r["id"] == "o1" for r in results)
        await s.write_positions([pos("o1", 7.0)])
        npc = await s.get_npc("o1")
        assert npc is not None and npc["x"] == 7.0
    finally:
        await s.close()


async def test_world_sections_replace_and_survive_reopen(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, store: Store
) -> None:
    """§9: a batch is written whole, a later write of a section replaces it, and what was
    written is there for the next process (the model survives restarts)."""
    a, b = bytes([1]) * 512, bytes([2]) * 512
    assert await store.load_sections() == []
    assert await store.write_sections([]) == 0
    assert (
        await store.write_sections([("overworld", 0, 4, 0, a), ("the_nether", -1, -4, 7, a)]) == 2
    )
    assert await store.write_sections([("overworld", 0, 4, 0, b)]) == 1
    other = make_store(backend, request, tmp_path)  # another process's view of the database
    await other.open()
    try:
        rows = sorted(await other.load_sections())
    finally:
        await other.close()
    assert rows == [("overworld", 0, 4, 0, b), ("the_nether", -1, -4, 7, a)]
