"""Pathfinding bounded per token and in time (§5, issue #10 item 8), on real
worker processes and, where a client would see it, over real sockets."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.protocol import ErrorCode, ProtocolError
from gateway.workers import OwnerBusy, TaskTimeout, run_path
from tests.harness import Rest, gateway_settings, running_gateway, token
from tests.integration.test_worker_pool import echo, gate, until


def spawn(coro: Any) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(coro)


async def test_queued_task_times_out_at_its_deadline(
    make_pool: Callable[..., Any], tmp_path: Path
) -> None:
    """Before: answered only once dequeued (8.5 s for a 5 s limit); now at the deadline."""
    pool = await make_pool(workers=1)
    door = tmp_path / "open"
    running = spawn(pool.submit(gate, str(door), timeout_s=60))
    await until(lambda: pool.stats()["busyWorkers"] == 1, "the worker to be busy")
    # The door stays shut: the queued task can only end by its own deadline.
    with pytest.raises(TaskTimeout):
        await asyncio.wait_for(pool.submit(echo, "late", timeout_s=0.3), 30)
    assert pool.stats()["queuedTasks"] == 0 and pool.stats()["tasksTimedOut"] == 1
    msg = {"ref": 5, "start": [0, 1, 0], "goal": [0, 1, 0], "world": {"solid": [[0, 0, 0]]}}
    result = await asyncio.wait_for(run_path(pool, {**msg, "timeout_ms": 300}, owner=None), 30)
    assert (result["ok"], result["error"], result["ref"]) == (False, "timeout", 5)
    door.touch()
    assert await running == "released"


async def test_in_flight_limit_per_owner(make_pool: Callable[..., Any], tmp_path: Path) -> None:
    pool = await make_pool(workers=1, max_per_owner=2)
    door = tmp_path / "open"
    mine = [spawn(pool.submit(gate, str(door), timeout_s=60, owner="a")) for _ in range(2)]
    await until(lambda: pool.stats()["queuedTasks"] == 1, "a queued task")
    with pytest.raises(OwnerBusy):
        await pool.submit(echo, "third", timeout_s=60, owner="a")
    msg = {"ref": 1, "start": [0, 1, 0], "goal": [0, 1, 0], "world": {"solid": [[0, 0, 0]]}}
    with pytest.raises(ProtocolError) as err:
        await run_path(pool, msg, owner="a")
    assert err.value.code is ErrorCode.RATE_LIMITED and err.value.ref == 1
    other = spawn(pool.submit(echo, "b's", timeout_s=60, owner="b"))  # others are unaffected
    door.touch()
    assert [await t for t in mine] == ["released", "released"]
    assert (await other)["arg"] == "b's"
    assert (await pool.submit(echo, "again", timeout_s=60, owner="a"))["arg"] == "again"


def slow_world() -> dict[str, Any]:
    """A 1M-cell floor with the goal walled off: the search expands it all (under a second)."""
    from gateway.workers.world import encode_bitset

    size = (1024, 1, 1024)
    return {
        "origin": [0, 0, 0],
        "size": list(size),
        "solid": encode_bitset((0, 0, 0), size, lambda x, y, z: True),
    }


async def test_one_token_cannot_fill_the_pool_over_rest(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, workers=1, path_in_flight=1, rest_write_burst=100)
    async with running_gateway(settings) as gw:
        greedy = Rest(gw.http, token("npc", "greedy"))
        polite = Rest(gw.http, token("npc", "polite"))
        try:
            body = {
                "start": [0, 1, 0],
                "goal": [5000, 1, 5000],  # outside the world: never found
                "world": slow_world(),
                "max_nodes": 10_000_000,
                "timeout_ms": 20_000,
            }
            first = spawn(greedy.call("POST", "/api/pathfind", body))
            pool = gw.node.worker_pool
            assert pool is not None
            await until(lambda: pool.stats()["busyWorkers"] == 1, "the search to run")
            # Held still, so that it is surely in flight when the second request comes (a
            # fast machine finished it first).
            searching = pool.busy_pids()
            for pid in searching:
                os.kill(pid, signal.SIGSTOP)
            try:
                status, answer = await greedy.call("POST", "/api/pathfind", body)
            finally:
                for pid in searching:
                    os.kill(pid, signal.SIGCONT)
            assert status == 429 and answer["error"]["code"] == "rate_limited"
            small = {"start": [0, 1, 0], "goal": [0, 1, 0], "world": {"solid": [[0, 0, 0]]}}
            status, answer = await polite.call("POST", "/api/pathfind", small)
            assert status == 200 and answer["ok"] is True
            assert (await first)[0] == 200
        finally:
            await greedy.close()
            await polite.close()


async def test_one_bot_cannot_fill_the_pool_over_websocket(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, workers=1, path_in_flight=2)
    async with running_gateway(settings) as gw:
        bot = await gw.bot("asker")
        small = {
            "type": "path",
            "start": [0, 1, 0],
            "goal": [0, 1, 0],
            "world": {"solid": [[0, 0, 0]]},
        }
        for ref in range(6):
            await bot.send({**small, "ref": ref})
        answers = [
            await bot.recv_until(lambda m: m.get("type") in ("path_result", "error"), 60)
            for _ in range(6)
        ]
        refused = [a for a in answers if a["type"] == "error"]
        assert all(a["code"] == "rate_limited" for a in refused)
        assert len(refused) >= 6 - 2 - 1  # at most 2 in flight (one may finish meanwhile)
        # The limit counts requests in flight: once answered, more are taken.
        await bot.send({**small, "ref": "later"})
        assert (await bot.recv_type("path_result"))["ref"] == "later"
