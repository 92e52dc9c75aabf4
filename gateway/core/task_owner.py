"""An owner for background tasks: each failure is logged when it happens, shutdown awaits them.

`asyncio.create_task` alone keeps only a weak reference (a task may vanish mid-flight), hides
its exception until the task is garbage-collected, and lets shutdown return while it still
runs. Everything the gateway starts in the background goes through a `TaskOwner` instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class TaskOwner:
    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: set[asyncio.Task[Any]] = set()  # run until close, then cancelled first
        self.failed = 0  # tasks that ended with an exception (not a cancellation)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def run_loop(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A loop that runs as long as its owner: `close` cancels it before awaiting the rest."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._loops.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._loops.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failed += 1
            log.error("background task %s failed", task.get_name(), exc_info=exc)

    async def settle(self, deadline_s: float) -> int:
        """Wait, cancelling nothing, for the tasks running now to end (at most `deadline_s`);
        how many have not. Those started meanwhile are not waited for."""
        running = set(self._tasks)
        if running:
            await asyncio.wait(running, timeout=deadline_s)
        return sum(not task.done() for task in running)

    async def close(self, deadline_s: float = 5.0) -> None:
        """Let running tasks finish within `deadline_s` (tasks they start included), then
        cancel what is left and wait for it to unwind. Loops are cancelled at once."""
        loops = set(self._loops)
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while self._tasks and loop.time() < end:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, end - loop.time()))
        while self._tasks:
            left = set(self._tasks)
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
