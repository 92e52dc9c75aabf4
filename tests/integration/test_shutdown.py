"""SIGTERM drains: the current window and metrics batch are written, sockets close with 1001."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from gateway.testing.proctree import descendants
from tests.harness import GatewayProcess, Peer, token
from tests.wait import until

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


def _pending_env(
    data: Path, backend: str, request: pytest.FixtureRequest, **overrides: str
) -> dict[str, str]:
    """A replica that keeps its metrics batch unwritten for minutes, on `backend`."""
    env = {
        "GATEWAY_DATA_DIR": str(data),
        "GATEWAY_METRICS_FLUSH_MS": "600000",
        "GATEWAY_METRICS_BATCH": "100000",
        "GATEWAY_WORKERS": "1",
        "GATEWAY_RATE_PER_S": "10000",
        "GATEWAY_RATE_BURST": "10000",
        **overrides,
    }
    if backend == "postgres":
        env["GATEWAY_DATABASE_URL"] = request.getfixturevalue("pg_url")
    return env


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_sigterm_writes_everything_accepted(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    # Long windows: everything below is still pending when SIGTERM arrives.
    env = _pending_env(tmp_path, backend, request, GATEWAY_TICK_MS="60000")
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
    env = _pending_env(tmp_path, backend, request)  # nothing is written before the kill
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
        metrics: list[dict[str, Any]] = []
        async with aiohttp.ClientSession(headers=headers) as http:

            async def all_stored() -> bool:
                nonlocal metrics
                async with http.get(url) as response:
                    assert response.status == 200, await response.text()
                    metrics = (await response.json())["metrics"]
                return len(metrics) >= BOTS * METRICS_PER_BOT

            await until(all_stored, "the journaled rows to be written", 30, interval_s=0.2)
        got = sorted((m["npc"], m["value"]) for m in metrics)
        assert got == sorted(
            (f"k{i}", float(step)) for i in range(BOTS) for step in range(METRICS_PER_BOT)
        )  # each once: none lost, none written twice
    finally:
        proc.kill()


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


PATH_REQUEST = {
    "type": "path",
    "start": [0, 1, 0],
    "goal": [3, 1, 0],
    "world": {"solid": [[x, 0, 0] for x in range(4)]},
}


async def test_sigterm_answers_a_path_request_in_flight(tmp_path: Path) -> None:
    """A drain lets the tasks running for clients finish before it closes their sockets."""
    proc = GatewayProcess({"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_WORKERS": "1"})
    proc.start()
    assert proc.proc is not None
    workers: list[int] = []
    try:
        bot = await _connect(proc, "/ws/npc", token("npc", "walker"))
        await bot.send({**PATH_REQUEST, "ref": "warm-up"})  # the pool is up and compiled
        warm = await bot.recv_until(lambda m: m.get("ref") == "warm-up", timeout=120)
        assert warm["type"] == "path_result", warm
        workers = descendants(proc.proc.pid)  # the worker pool's processes
        _signal_all(workers, signal.SIGSTOP)  # the next request cannot finish yet
        await bot.send({**PATH_REQUEST, "ref": "in-flight"})
        await bot.roundtrip()  # the request was read: its job is running
        proc.proc.send_signal(signal.SIGTERM)
        async with aiohttp.ClientSession() as http:

            async def draining_or_gone() -> bool:
                try:
                    async with http.get(f"{proc.http}/api/health") as response:
                        return response.status == 503
                except aiohttp.ClientConnectionError:
                    return True

            await until(draining_or_gone, "the replica to drain", 10, interval_s=0.02)
        _signal_all(workers, signal.SIGCONT)  # now the workers may finish
        answer = await bot.recv_until(lambda m: m.get("ref") == "in-flight", timeout=30)
        assert answer["type"] == "path_result" and answer["ok"] is True, answer
        assert await bot.closed_with() == 1001
        await asyncio.to_thread(proc.proc.wait, 30)
    finally:
        _signal_all(workers, signal.SIGCONT)
        proc.kill()
