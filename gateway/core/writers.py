"""Background writers between the hot path and the store. Nothing accepted is lost:

- positions: one statement per tick; while the database is down, windows coalesce in memory
  (latest per NPC wins, bounded by the number of NPCs) and are written when it returns;
- statuses: written at once, latest per NPC wins while the database is down;
- metrics: batched (`batch` rows or every `flush_ms`); rows wait in a bounded spool while the
  database is down (the oldest are dropped, and counted, only past `spool_max`), and in a
  journal on disk (gateway/core/journal.py) so that a killed process loses none of them;
- registrations: a bot that connected while the database was down is registered once it is
  back, before anything of its own is written (each writer settles them first), so nothing it
  sent meanwhile is dropped for want of its row (docs/reliability.md). Rows the database still
  does not take (the NPC was deleted) are counted as `dropped`, never dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from gateway.core.journal import Journal
from gateway.store import StoreUnavailable
from gateway.types import MetricRow, PositionUpdate

log = logging.getLogger(__name__)

K = TypeVar("K")
T = TypeVar("T")
ProfileChange = Callable[[dict[str, Any]], dict[str, Any]]  # a learning profile's new value

RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0


class _Retrying:
    """A wake-on-demand loop that retries its flush with capped backoff while the store is down."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = asyncio.Lock()  # the loop and a shutdown flush never write concurrently
        self._task: asyncio.Task[None] | None = None
        # Runs before every flush (pending registrations); StoreUnavailable there retries.
        self.before: Callable[[], Awaitable[None]] | None = None
        self.failures = 0
        self.rejected = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def wake(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def _loop(self) -> None:
        delay = RETRY_MIN_S
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                async with self._lock:
                    if self.before is not None:
                        await self.before()
                    await self._flush()
                delay = RETRY_MIN_S
            except StoreUnavailable as exc:  # kept: written when the store is back
                self.failures += 1
                log.warning("%s: store unavailable (%s); retry in %.1fs", self._name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                self._wake.set()
                continue
            except Exception:
                # The database refused the data itself (input validation should make this
                # impossible): retrying would block everything behind it, so it is dropped.
                self.rejected += self._reject_head()
                log.exception("%s: the database refused a write; dropped it", self._name)
            if not self._has_pending():
                self._idle.set()
            else:
                self._wake.set()

    async def flush_now(self, deadline_s: float) -> bool:
        """Write what is pending, retrying until `deadline_s`; True if everything was written."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while self._has_pending():
            try:
                async with self._lock:
                    if self.before is not None:
                        await self.before()
                    await self._flush()
            except StoreUnavailable:
                if loop.time() >= end:
                    return False
                await asyncio.sleep(RETRY_MIN_S)
            except Exception:
                self.rejected += self._reject_head()
                log.exception("%s: the database refused a write; dropped it", self._name)
        return True

    async def _flush(self) -> None:
        raise NotImplementedError

    def _has_pending(self) -> bool:
        raise NotImplementedError

    def _reject_head(self) -> int:
        """Drop what the last failed write held; how many items that was."""
        raise NotImplementedError


class _QueueWriter(_Retrying, Generic[T]):
    """A retrying writer over one FIFO queue, written from its head: what a refused write
    held is the head item."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._queue: deque[T] = deque()

    def _has_pending(self) -> bool:
        return bool(self._queue)

    def _reject_head(self) -> int:
        self._queue.popleft()
        return 1

    @property
    def pending(self) -> int:
        return len(self._queue)


class _CoalescingWriter(_Retrying, Generic[K, T]):
    """Writes everything that waits in one statement; while writes fail, what arrives meanwhile
    coalesces into what waits (the latest item per key wins), so what waits stays bounded by
    the number of keys. `write` answers how many rows it wrote (None: all of them)."""

    def __init__(self, name: str, write: Callable[[list[T]], Awaitable[int | None]]) -> None:
        super().__init__(name)
        self._write = write
        self._unwritten: dict[K, T] = {}
        self.batches_written = 0
        self.items_written = 0
        self.dropped = 0  # rows the database did not take (the NPC was deleted)

    def _has_pending(self) -> bool:
        return bool(self._unwritten)

    def _reject_head(self) -> int:
        dropped, self._unwritten = len(self._unwritten), {}
        return dropped  # positions: the next window brings every moving NPC's again

    async def _flush(self) -> None:
        batch, self._unwritten = self._unwritten, {}
        if not batch:
            return
        try:
            written = await self._write(list(batch.values()))
        except BaseException:
            # Put it back under anything newer that arrived meanwhile.
            batch.update(self._unwritten)
            self._unwritten = batch
            raise
        self.batches_written += 1
        if written is None:
            written = len(batch)
        self.items_written += written
        self.dropped += len(batch) - written

    @property
    def pending(self) -> int:
        return len(self._unwritten)


class PositionWriter(_CoalescingWriter[str, PositionUpdate]):
    """Writes each cut window in one statement; coalesces windows while a write is failing."""

    def __init__(self, write: Callable[[list[PositionUpdate]], Awaitable[int | None]]) -> None:
        super().__init__("position-writer", write)

    def submit(self, window: dict[str, PositionUpdate]) -> None:
        if self._unwritten:
            self._unwritten.update(window)
        else:
            self._unwritten = dict(window)
        self.wake()

    def discard(self, npc_id: str) -> None:
        self._unwritten.pop(npc_id, None)


class StatusWriter(_Retrying):
    """Stores statuses at once; the latest per NPC waits and retries while the store is down."""

    def __init__(self, write: Callable[[str, str], Awaitable[Any]]) -> None:
        super().__init__("status-writer")
        self._write = write
        self._pending: dict[str, str] = {}

    def submit(self, npc_id: str, status: str) -> None:
        self._pending.pop(npc_id, None)  # keep order of arrival for the newest
        self._pending[npc_id] = status
        self.wake()

    def _has_pending(self) -> bool:
        return bool(self._pending)

    def _reject_head(self) -> int:
        self._pending.pop(next(iter(self._pending)), None)
        return 1

    async def _flush(self) -> None:
        while self._pending:
            npc_id, status = next(iter(self._pending.items()))
            await self._write(npc_id, status)
            if self._pending.get(npc_id) == status:
                del self._pending[npc_id]

    @property
    def pending(self) -> int:
        return len(self._pending)


class MetricsBatcher(_Retrying):
    """Batches metric rows: flush at `batch` rows or every `flush_ms`, whichever comes first."""

    def __init__(
        self,
        write: Callable[[list[MetricRow]], Awaitable[int | None]],
        batch: int,
        flush_ms: int,
        spool_max: int = 100_000,
        journal: Journal | None = None,
    ) -> None:
        super().__init__("metrics-batcher")
        self._write = write
        # Every row held here is also on disk until written: a killed replica loses none.
        self.journal = journal
        self._batch = batch
        self._flush_s = flush_ms / 1000
        self._rows: deque[MetricRow] = deque()
        self._spool_max = spool_max
        self._timer: asyncio.Task[None] | None = None
        self.total_batches = 0
        self.items_processed = 0
        self.dropped = 0
        self._partial_due = False  # the timer fired: a partial batch goes too

    def start(self) -> None:
        super().start()
        self._timer = asyncio.create_task(self._tick(), name="metrics-timer")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
        await super().stop()

    def add(self, row: MetricRow) -> None:
        if self.journal is not None:
            self.journal.append(row)
        self._rows.append(row)
        if len(self._rows) > self._spool_max:
            self._rows.popleft()
            self._released(1)
            self.dropped += 1
        if len(self._rows) >= self._batch:
            self.wake()

    def flush_soon(self) -> None:
        """Write what is held now, a partial batch too (rows that already waited elsewhere)."""
        if self._rows:
            self._partial_due = True
            self.wake()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            if self._rows:
                self._partial_due = True
                self.wake()

    def _reject_head(self) -> int:
        n = min(self._batch, len(self._rows))
        for _ in range(n):
            self._rows.popleft()
        self._released(n)
        return n

    def _released(self, n: int) -> None:
        if self.journal is not None:
            self.journal.release(n)

    def _has_pending(self) -> bool:
        # A partial batch is not "pending work" until the timer (or shutdown) says so.
        return len(self._rows) >= self._batch or (bool(self._rows) and self._partial_due)

    async def _flush(self) -> None:
        while len(self._rows) >= self._batch or (self._rows and self._partial_due):
            n = min(self._batch, len(self._rows))
            rows = [self._rows[i] for i in range(n)]
            written = await self._write(rows)
            for _ in range(n):
                self._rows.popleft()
            self._released(n)
            if written is not None:
                self.dropped += n - written  # rows of NPCs the database does not know
            self.total_batches += 1
            self.items_processed += n
            if n < self._batch:
                self._partial_due = False

    async def flush_now(self, deadline_s: float) -> bool:
        # On shutdown a partial batch goes too.
        self._partial_due = True
        return await super().flush_now(deadline_s)

    @property
    def pending(self) -> int:
        return len(self._rows)


class PassthroughPositionWriter(_QueueWriter[PositionUpdate]):
    """The "before" configuration (tick 0): one statement per update, as it comes.

    Kept only so the benchmark can show what coalescing saves; the backlog is counted.
    """

    def __init__(self, write: Callable[[list[PositionUpdate]], Awaitable[int | None]]) -> None:
        super().__init__("position-writer-passthrough")
        self._write = write
        self.batches_written = 0
        self.items_written = 0
        self.dropped = 0  # positions of NPCs the database does not know (deleted)

    def submit(self, window: dict[str, PositionUpdate]) -> None:
        self._queue.extend(window.values())
        self.wake()

    def discard(self, npc_id: str) -> None:
        return None

    async def _flush(self) -> None:
        while self._queue:
            written = await self._write([self._queue[0]])
            self._queue.popleft()
            self.batches_written += 1
            written = 1 if written is None else written
            self.items_written += written
            self.dropped += 1 - written


class ProfileUpdater(_QueueWriter[tuple[str, ProfileChange]]):
    """Applies task outcomes to learning profiles, in order, atomically in the store.

    `update` is the store's atomic read-modify-write; outcomes wait (bounded) and retry while
    the store is down. An outcome for an NPC the store does not know is dropped.
    """

    def __init__(
        self,
        update: Callable[[str, ProfileChange], Awaitable[Any]],
        on_updated: Callable[[str], Awaitable[None]],
        queue_max: int = 100_000,
    ) -> None:
        super().__init__("profile-updater")
        self._update = update
        self._on_updated = on_updated
        self._queue_max = queue_max
        self.applied = 0
        self.dropped = 0

    def submit(self, npc_id: str, change: ProfileChange) -> None:
        if len(self._queue) >= self._queue_max:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append((npc_id, change))
        self.wake()

    async def _flush(self) -> None:
        while self._queue:
            npc_id, change = self._queue[0]
            try:
                await self._update(npc_id, change)
            except KeyError:
                self.dropped += 1  # the NPC is gone
            else:
                self.applied += 1
                await self._on_updated(npc_id)
            self._queue.popleft()


class Registrar(_Retrying):
    """NPCs whose bot connected while the database was down (docs/reliability.md): registered
    once it is back. The other writers call `settle` before each flush, so an NPC's row exists
    before its positions, statuses, metrics and profile changes are written."""

    def __init__(self, ensure: Callable[[str], Awaitable[Any]]) -> None:
        super().__init__("registrar")
        self._ensure = ensure
        self._pending: dict[str, None] = {}  # in order of arrival
        self._settling = asyncio.Lock()  # several writers may ask at once: register once
        self.registered = 0
        self.dropped = 0

    def add(self, npc_id: str) -> None:
        self._pending[npc_id] = None
        self.wake()

    def discard(self, npc_id: str) -> None:
        self._pending.pop(npc_id, None)

    async def settle(self) -> None:
        """Register every pending NPC; StoreUnavailable (the rest stay pending) if it cannot."""
        if not self._pending:
            return
        async with self._settling:
            await self._settle()

    async def _settle(self) -> None:
        while self._pending:
            npc_id = next(iter(self._pending))
            try:
                await self._ensure(npc_id)
            except StoreUnavailable:
                raise
            except Exception:
                self.dropped += 1  # the database refused this id itself: do not block the rest
                log.exception("registrar: could not register %s", npc_id)
            else:
                self.registered += 1
            self._pending.pop(npc_id, None)

    def _has_pending(self) -> bool:
        return bool(self._pending)

    def _reject_head(self) -> int:
        return 0  # settle() handles its own refusals

    async def _flush(self) -> None:
        await self.settle()

    @property
    def pending(self) -> int:
        return len(self._pending)


SectionRow = tuple[str, int, int, int, bytes]


class SectionWriter(_CoalescingWriter[tuple[str, int, int, int], SectionRow]):
    """Writes each tick's changed world sections in one statement (§9). While the store is
    down, later ticks coalesce into what waits (latest bytes per section win), so what waits is
    bounded by the number of distinct sections, like positions by the number of NPCs."""

    def __init__(self, write: Callable[[list[SectionRow]], Awaitable[int | None]]) -> None:
        super().__init__("section-writer", write)

    def submit(self, rows: list[SectionRow]) -> None:
        for row in rows:
            self._unwritten[row[:4]] = row  # type: ignore[index]
        self.wake()
