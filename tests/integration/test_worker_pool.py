"""The worker pool with real processes: results, busy, crashes, stuck tasks, cancellation."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.protocol import ErrorCode, ProtocolError
from gateway.workers import (
    PoolBusy,
    PoolClosed,
    TaskFailed,
    TaskTimeout,
    WorkerCrashed,
    run_mining_plan,
    run_path,
)
from tests import wait

# -- task functions: top-level so the spawned workers can import them by name -------------------


def echo(arg: Any, budget_s: float) -> Any:
    return {"arg": arg, "pid": os.getpid(), "has_budget": budget_s > 0}


def gate(path: str, budget_s: float) -> str:
    """Block until `path` exists (polled, with a deadline): a task the test holds open."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError("gate never opened")
        time.sleep(0.005)
    return "released"


def stuck(arg: Any, budget_s: float) -> None:
    threading.Event().wait()  # never returns: only a kill ends it


def boom(arg: Any, budget_s: float) -> None:
    raise ValueError("kaboom")


# -- helpers ---------------------------------------------------------------------------------

until = functools.partial(wait.until, deadline_s=60.0, interval_s=0.005)


def spawn(coro: Any) -> asyncio.Task[Any]:
    return asyncio.ensure_future(coro)


# -- tests -----------------------------------------------------------------------------------


async def test_runs_tasks_on_worker_processes(make_pool: Callable[..., Any]) -> None:
    pool = await make_pool(workers=2, queue_max=32)
    results = await asyncio.gather(*(pool.submit(echo, i, timeout_s=30) for i in range(20)))
    assert [r["arg"] for r in results] == list(range(20))
    assert all(r["has_budget"] for r in results)
    assert {r["pid"] for r in results} <= set(pool.worker_pids())
    assert os.getpid() not in {r["pid"] for r in results}
    with pytest.raises(TaskFailed, match="kaboom"):
        await pool.submit(boom, None, timeout_s=30)
    stats = pool.stats()
    assert stats["totalWorkers"] == 2
    assert stats["totalTasksProcessed"] == 21
    assert stats["busyWorkers"] == 0 and stats["queuedTasks"] == 0


async def test_path_and_mining_through_the_pool(make_pool: Callable[..., Any]) -> None:
    pool = await make_pool(workers=1, warmup="gateway.workers.tasks:warm_up")
    world = {
        "solid": [[x, 0, z] for x in range(8) for z in range(8)] + [[4, 1, z] for z in range(7)]
    }
    msg = {"type": "path", "ref": "r1", "start": [0, 1, 0], "goal": [7, 1, 0], "world": world}
    result = await run_path(pool, msg, owner="bot")
    assert result["type"] == "path_result" and result["ref"] == "r1" and result["ok"]
    assert result["path"][0] == [0, 1, 0] and result["path"][-1] == [7, 1, 0]
    assert result["cost"] == 9  # over the ridge: step up (2) and drop (2) instead of two walks
    assert result["expanded"] > 0 and result["ms"] >= 0
    no_path = await run_path(pool, {**msg, "goal": [7, 5, 7]}, owner="bot")
    assert no_path["ok"] is False and no_path["error"] == "no_path"
    too_large = await run_path(pool, {**msg, "max_nodes": 2}, owner="bot")
    assert too_large["error"] == "too_large"
    with pytest.raises(ProtocolError) as err:
        await run_path(pool, {**msg, "world": {"solid": [[0, 0]]}}, owner="bot")
    assert err.value.code is ErrorCode.BAD_MESSAGE and err.value.ref == "r1"
    with pytest.raises(ProtocolError) as err:
        await run_path(pool, {**msg, "start": "here"}, owner="bot")
    assert err.value.code is ErrorCode.BAD_MESSAGE
    mining = {
        "type": "mining_plan",
        "ref": 5,
        "position": [0, 0, 0],
        "deposits": [
            {"x": 1, "y": 0, "z": 0, "kind": "iron", "count": 2},
            {"x": 2, "y": 0, "z": 0, "kind": "gold", "count": 2},
        ],
        "values": {"iron": 1, "gold": 3},
        "top": 1,
    }
    plan = await run_mining_plan(pool, mining, owner="bot")
    assert plan["type"] == "mining_plan_result" and plan["ref"] == 5 and plan["ok"]
    assert [d["kind"] for d in plan["plan"]] == ["gold"] and plan["plan"][0]["score"] == 2
    with pytest.raises(ProtocolError) as err:
        await run_mining_plan(pool, {**mining, "deposits": [{"kind": "x"}]}, owner="bot")
    assert err.value.code is ErrorCode.BAD_MESSAGE


async def test_full_queue_answers_busy_at_once(
    make_pool: Callable[..., Any], tmp_path: Path
) -> None:
    pool = await make_pool(workers=1, queue_max=1)
    door = tmp_path / "open"
    running = spawn(pool.submit(gate, str(door), timeout_s=60))
    await until(lambda: pool.stats()["busyWorkers"] == 1, "the worker to be busy")
    queued = spawn(pool.submit(echo, "queued", timeout_s=60))
    await until(lambda: pool.stats()["queuedTasks"] == 1, "a queued task")
    with pytest.raises(PoolBusy):
        await pool.submit(echo, "one too many", timeout_s=60)
    msg = {"ref": 1, "start": [0, 1, 0], "goal": [0, 1, 0], "world": {"solid": [[0, 0, 0]]}}
    with pytest.raises(ProtocolError) as err:
        await run_path(pool, msg, owner="bot")
    assert err.value.code is ErrorCode.BUSY and err.value.ref == 1
    assert pool.stats()["tasksRejected"] == 2
    door.touch()
    assert await running == "released"
    assert (await queued)["arg"] == "queued"


async def test_worker_killed_mid_task_is_replaced(
    make_pool: Callable[..., Any], tmp_path: Path
) -> None:
    pool = await make_pool(workers=1)
    task = spawn(pool.submit(gate, str(tmp_path / "never"), timeout_s=60))
    await until(lambda: bool(pool.busy_pids()), "the task to start")
    (victim,) = pool.busy_pids()
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerCrashed):
        await task
    result = await pool.submit(echo, "after", timeout_s=60)
    assert result["arg"] == "after" and result["pid"] != victim
    assert pool.worker_pids() == [result["pid"]]
    stats = pool.stats()
    assert stats["workersCrashed"] == 1 and stats["workersStarted"] == 2


async def test_stuck_task_times_out_and_worker_is_replaced(make_pool: Callable[..., Any]) -> None:
    pool = await make_pool(workers=1, grace_s=0.2)
    (first,) = pool.worker_pids()
    with pytest.raises(TaskTimeout):
        await pool.submit(stuck, None, timeout_s=0.3)
    result = await pool.submit(echo, "next", timeout_s=60)
    assert result["pid"] != first
    await until(lambda: not _alive(first), "the stuck worker to be gone")
    assert pool.stats()["tasksTimedOut"] == 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_stuck_path_request_answers_timeout(make_pool: Callable[..., Any]) -> None:
    # A world that decodes but whose search is far longer than a 1 ms budget.
    pool = await make_pool(workers=1, warmup="gateway.workers.tasks:warm_up")
    world = {"solid": [[x, 0, z] for x in range(300) for z in range(300)]}
    msg = {"start": [0, 1, 0], "goal": [299, 1, 299], "world": world, "timeout_ms": 1}
    result = await run_path(pool, msg, owner=None)
    assert result["ok"] is False and result["error"] == "timeout"


async def test_cancel_owner_drops_queued_tasks(
    make_pool: Callable[..., Any], tmp_path: Path
) -> None:
    pool = await make_pool(workers=1, queue_max=10)
    door = tmp_path / "open"
    running = spawn(pool.submit(gate, str(door), timeout_s=60, owner="a"))
    await until(lambda: pool.stats()["busyWorkers"] == 1, "the worker to be busy")
    gone = [spawn(pool.submit(echo, i, timeout_s=60, owner="b")) for i in range(3)]
    kept = spawn(pool.submit(echo, "c", timeout_s=60, owner="c"))
    await until(lambda: pool.stats()["queuedTasks"] == 4, "four queued tasks")
    assert pool.cancel_owner("b") == 3
    assert pool.stats()["queuedTasks"] == 1
    for task in gone:
        with pytest.raises(asyncio.CancelledError):
            await task
    door.touch()
    assert await running == "released"
    assert (await kept)["arg"] == "c"
    assert pool.stats()["tasksCancelled"] == 3


async def test_loop_keeps_serving_while_pool_is_saturated(
    make_pool: Callable[..., Any], tmp_path: Path
) -> None:
    pool = await make_pool(workers=2, queue_max=4)
    door = tmp_path / "open"
    tasks = [spawn(pool.submit(gate, str(door), timeout_s=60)) for _ in range(6)]
    await until(
        lambda: pool.stats()["busyWorkers"] == 2 and pool.stats()["queuedTasks"] == 4,
        "the pool to be saturated",
    )
    served = asyncio.Event()
    asyncio.get_running_loop().call_soon(served.set)
    probe = spawn(asyncio.sleep(0, result="probe ran"))
    await served.wait()
    assert await probe == "probe ran"
    # Both ran while every worker was still held and the queue still full.
    assert pool.stats()["busyWorkers"] == 2 and pool.stats()["queuedTasks"] == 4
    assert not any(t.done() for t in tasks)
    door.touch()
    assert await asyncio.gather(*tasks) == ["released"] * 6


async def test_close_fails_waiting_tasks_and_stops_workers(
    make_pool: Callable[..., Any], tmp_path: Path
) -> None:
    pool = await make_pool(workers=1)
    pids = pool.worker_pids()
    running = spawn(pool.submit(gate, str(tmp_path / "never"), timeout_s=60))
    await until(lambda: pool.stats()["busyWorkers"] == 1, "the worker to be busy")
    queued = spawn(pool.submit(echo, 1, timeout_s=60))
    await until(lambda: pool.stats()["queuedTasks"] == 1, "a queued task")
    await pool.close()
    for task in (running, queued):
        with pytest.raises(PoolClosed):
            await task
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(PoolClosed):
        await pool.submit(echo, 2, timeout_s=60)
