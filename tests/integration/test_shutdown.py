"""SIGTERM drains: the current window and metrics batch are written, sockets close with 1001."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from tests.harness import GatewayProcess, Peer, token

BOTS = 20
METRICS_PER_BOT = 30


async def _connect(proc: GatewayProcess, path: str, tok: str, encoding: str = "json") -> Peer:
    from websockets.asyncio.client import connect

    ws = await connect(
        proc.ws + path,
        additional_headers={"Authorization": f"Bearer {tok}"},
        subprotocols=[f"aicraft.v1.{encoding}"],  # type: ignore[list-item]
        max_size=None,
    )
    return Peer(ws, encoding == "msgpack")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_sigterm_writes_everything_accepted(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    env = {
        "GATEWAY_DATA_DIR": str(tmp_path),
        # Long windows: everything below is still pending when SIGTERM arrives.
        "GATEWAY_TICK_MS": "60000",
        "GATEWAY_METRICS_FLUSH_MS": "60000",
        "GATEWAY_METRICS_BATCH": "100000",
        "GATEWAY_WORKERS": "1",
        "GATEWAY_RATE_PER_S": "10000",
        "GATEWAY_RATE_BURST": "10000",
    }
    if backend == "postgres":
        env["GATEWAY_DATABASE_URL"] = request.getfixturevalue("pg_url")
    proc = GatewayProcess(env)
    proc.start()
    try:
        viewer = await _connect(proc, "/ws/viewer", token("viewer", "v"), "msgpack")
        bots = [await _connect(proc, "/ws/npc", token("npc", f"b{i}")) for i in range(BOTS)]
        for i, bot in enumerate(bots):
            for step in range(METRICS_PER_BOT):
                await bot.send({"type": "pos", "x": step, "y": 64, "z": i})
                await bot.send({"type": "metric", "name": "step", "value": step})
        await asyncio.gather(*(bot.roundtrip() for bot in bots))  # all accepted

        code, output = await asyncio.to_thread(proc.terminate)
        assert code == 0, output
        frame = await viewer.recv_type("positions")  # the last window still went out
        assert {u["id"]: u["x"] for u in frame["updates"]} == {
            f"b{i}": METRICS_PER_BOT - 1 for i in range(BOTS)
        }
        assert await viewer.closed_with() == 1001
        assert all([await bot.closed_with() == 1001 for bot in bots])
    finally:
        proc.kill()

    store = (
        PostgresStore(env["GATEWAY_DATABASE_URL"])
        if backend == "postgres"
        else SqliteStore(tmp_path / "gateway.sqlite3")
    )
    await store.open()
    try:
        for i in range(BOTS):
            npc = await store.get_npc(f"b{i}")
            assert npc is not None and npc["x"] == METRICS_PER_BOT - 1 and npc["z"] == i
        rows = await store.query_metrics(name="step", limit=1000)
        assert len(rows) == BOTS * METRICS_PER_BOT
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_sigkill_loses_no_accepted_metric(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """A killed replica's unwritten metrics batch is journaled; its restart writes it."""
    env = {
        "GATEWAY_DATA_DIR": str(tmp_path),
        "GATEWAY_METRICS_FLUSH_MS": "600000",  # nothing is written before the kill
        "GATEWAY_METRICS_BATCH": "100000",
        "GATEWAY_WORKERS": "1",
        "GATEWAY_RATE_PER_S": "10000",
        "GATEWAY_RATE_BURST": "10000",
    }
    if backend == "postgres":
        env["GATEWAY_DATABASE_URL"] = request.getfixturevalue("pg_url")
    proc = GatewayProcess(env)
    proc.start()
    try:
        bots = [await _connect(proc, "/ws/npc", token("npc", f"k{i}")) for i in range(BOTS)]
        for bot in bots:
            for step in range(METRICS_PER_BOT):
                await bot.send({"type": "metric", "name": "kept", "value": step})
        await asyncio.gather(*(bot.roundtrip() for bot in bots))  # all accepted
        proc.kill()  # SIGKILL: no drain, the batch never reached the database
        proc.start()  # the same data directory: the journal is read at start
        headers = {"Authorization": f"Bearer {token('admin', 'ops')}"}
        url = f"{proc.http}/api/metrics?name=kept&limit=1000"
        deadline = asyncio.get_running_loop().time() + 30
        async with aiohttp.ClientSession(headers=headers) as http:
            while True:
                async with http.get(url) as response:
                    assert response.status == 200, await response.text()
                    metrics = (await response.json())["metrics"]
                if len(metrics) >= BOTS * METRICS_PER_BOT:
                    break
                assert asyncio.get_running_loop().time() < deadline, len(metrics)
                await asyncio.sleep(0.2)  # the poll's pace; the deadline decides
        got = sorted((m["npc"], m["value"]) for m in metrics)
        assert got == sorted(
            (f"k{i}", float(step)) for i in range(BOTS) for step in range(METRICS_PER_BOT)
        )  # each once: none lost, none written twice
    finally:
        proc.kill()
