"""Waiting in tests: poll a condition until it holds, failing after a deadline (never a bare
sleep as synchronisation)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import pytest


async def until(
    check: Callable[[], Awaitable[object] | object],
    what: str,
    deadline_s: float = 10.0,
    *,
    interval_s: float = 0.01,
    details: Callable[[], str] | None = None,
) -> None:
    """Poll `check` (sync or async) until it returns something true; fail the test after
    `deadline_s`, naming `what` was awaited and appending `details()` when given."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > end:
            extra = f"\n{details()}" if details is not None else ""
            pytest.fail(f"timed out after {deadline_s:g} s waiting for {what}{extra}")
        await asyncio.sleep(interval_s)
