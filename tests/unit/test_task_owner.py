"""TaskOwner: background tasks whose failures are logged and which shutdown awaits."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.core.task_owner import TaskOwner


async def test_a_failure_is_logged_when_it_happens(caplog: pytest.LogCaptureFixture) -> None:
    owner = TaskOwner("test")

    async def boom() -> None:
        raise RuntimeError("lost write")

    with caplog.at_level(logging.ERROR, logger="gateway.core.task_owner"):
        task = owner.spawn(boom(), "boom")
        await asyncio.wait([task])
    assert owner.failed == 1
    assert owner.pending == 0
    assert "boom" in caplog.text and "lost write" in caplog.text


async def test_close_awaits_what_finishes_in_time_and_cancels_the_rest() -> None:
    owner = TaskOwner("test")
    finish = asyncio.Event()
    done: list[str] = []

    async def short() -> None:
        await finish.wait()
        done.append("short")

    async def forever() -> None:
        await asyncio.Event().wait()

    owner.spawn(short(), "short")
    stuck = owner.spawn(forever(), "forever")
    asyncio.get_running_loop().call_soon(finish.set)
    await owner.close(deadline_s=0.2)
    assert done == ["short"]
    assert stuck.cancelled()
    assert owner.pending == 0


async def test_cancellation_is_not_a_failure() -> None:
    owner = TaskOwner("test")
    task = owner.spawn(asyncio.Event().wait(), "waiter")
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert owner.failed == 0 and owner.pending == 0


async def test_settle_waits_for_running_tasks_and_cancels_nothing() -> None:
    owner = TaskOwner("test")
    finish = asyncio.Event()
    stuck = owner.spawn(asyncio.Event().wait(), "stuck")
    quick = owner.spawn(finish.wait(), "quick")
    asyncio.get_running_loop().call_soon(finish.set)
    assert await owner.settle(deadline_s=0.2) == 1  # `stuck` is still running
    assert quick.done() and not stuck.done()
    await owner.close(deadline_s=0)


async def test_loops_are_cancelled_at_once_on_close() -> None:
    owner = TaskOwner("test")
    loop = owner.run_loop(asyncio.Event().wait(), "loop")
    started = asyncio.get_running_loop().time()
    await owner.close(deadline_s=5.0)
    assert loop.cancelled()
    assert asyncio.get_running_loop().time() - started < 5.0  # not waited for
