"""One WebSocket's outgoing frames: written at once while the socket keeps up, else queued in
order for a single writer task that awaits the socket's drain.

Bots and viewers share this policy; what a full or stuck outbox costs is theirs. `send`
refuses a frame past `max_bytes` (a bot's message is then dropped) and `stalled_for` tells how
long a send has been stuck (the hub closes such a bot or viewer with 1008). A viewer also
queues *steps* (its resync and replays, awaited by the writer in their turn) and has a latest
frame (its pending positions) that the writer sends once the queue is empty.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import WSMsgType, web

from gateway.direct_ws import write_now

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[None]]  # work the writer awaits in its turn, instead of a frame
Entry = bytes | Step
Spawn = Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]]


def _create_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coro, name=name)


class Outbox:
    """A bounded queue of frames and steps for one socket, drained by one writer task that runs
    only while something waits. Nothing leaves before `open()`."""

    __slots__ = (
        "_busy",
        "_entries",
        "_failed",
        "_latest",
        "_latest_due",
        "_sending_since",
        "_spawn",
        "_writer",
        "is_open",
        "max_bytes",
        "name",
        "opcode",
        "queued_bytes",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        opcode: WSMsgType,
        *,
        max_bytes: int | None = None,
        latest: Step | None = None,
        failed: Step | None = None,
        spawn: Spawn = _create_task,
        name: str = "writer",
    ) -> None:
        self.ws = ws
        self.opcode = opcode
        self.max_bytes = max_bytes  # queued frames beyond the socket's own buffer
        self.name = name
        self.is_open = False
        self.queued_bytes = 0  # including the frame the writer is sending
        # Created on demand and dropped once drained: most connections never queue for long,
        # and an empty deque takes some 760 bytes.
        self._entries: deque[Entry] | None = None
        self._latest = latest  # sends the owner's latest frame; awaited after the queue
        self._latest_due = False
        self._failed = failed  # awaited after a bug in the writer; without it, it propagates
        self._spawn = spawn
        self._writer: asyncio.Task[None] | None = None
        self._busy = False  # the writer is inside an entry: nothing may overtake it
        self._sending_since: float | None = None  # monotonic start of the send in flight

    def __len__(self) -> int:
        """Entries waiting (a step counts as one, whatever it sends)."""
        return 0 if self._entries is None else len(self._entries)

    # -- called by the owner (never awaits) ---------------------------------------------------

    def open(self) -> None:
        """From now on frames may leave (a bot's `welcome` waits for its presence claim)."""
        self.is_open = True
        self._wake()

    def try_now(self, payload: bytes) -> bool:
        """Write `payload` at once if nothing waits before it and the socket keeps up."""
        return (
            self.is_open
            and not self._entries
            and not self._busy
            and not self._latest_due
            and write_now(self.ws, payload, self.opcode)
        )

    def send(self, payload: bytes) -> bool:
        """Write now or queue; False (nothing queued) if the queue would pass `max_bytes`."""
        if self.try_now(payload):
            return True
        if self.max_bytes is not None and self.queued_bytes + len(payload) > self.max_bytes:
            return False
        self.queue(payload)
        return True

    def queue(self, entry: Entry) -> None:
        """Queue a frame or a step, without trying to write it now (and without a bound)."""
        if self._entries is None:
            self._entries = deque()
        self._entries.append(entry)
        if type(entry) is bytes:
            self.queued_bytes += len(entry)
        self._wake()

    def keep(self, wanted: Callable[[Entry], bool]) -> int:
        """Forget the queued entries not `wanted`; how many went."""
        entries = self._entries
        if not entries:
            return 0
        kept: deque[Entry] = deque()
        for entry in entries:
            if wanted(entry):
                kept.append(entry)
            elif type(entry) is bytes:
                self.queued_bytes -= len(entry)
        self._entries = kept
        return len(entries) - len(kept)

    def clear(self) -> int:
        """Forget everything queued; how many entries went."""
        return self.keep(lambda _: False)

    def latest_due(self, due: bool = True) -> None:
        """The owner has (or no longer has) a latest frame for the writer, after the queue."""
        self._latest_due = due
        if due:
            self._wake()

    def stalled_for(self, now: float) -> float:
        """How long the send in flight has waited for the peer to read (0 if none)."""
        return 0.0 if self._sending_since is None else now - self._sending_since

    def cancel(self) -> None:
        """Stop the writer (the connection is going); no-op from within the writer itself."""
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()

    # -- the writer task ----------------------------------------------------------------------

    def _wake(self) -> None:
        if self.is_open and (self._writer is None or self._writer.done()):
            self._writer = self._spawn(self._write_loop(), self.name)

    async def write(self, payload: bytes) -> None:
        """Send one frame from the writer (or a step), awaiting the socket's drain."""
        self._sending_since = time.monotonic()
        try:
            await self.ws.send_frame(payload, self.opcode)
        finally:
            self._sending_since = None

    async def _write_loop(self) -> None:
        try:
            await self._drain()
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass  # the connection is going: its receive loop ends the session
        except Exception:
            if self._failed is None:
                raise
            log.exception("%s failed", self.name)
            await self._failed()
        finally:
            self._busy = False

    async def _drain(self) -> None:
        """Send what waits, in order, then the latest frame; returns when nothing is left."""
        ws = self.ws
        while not ws.closed:
            entries = self._entries
            if entries:
                entry = entries.popleft()
                self._busy = True
                if type(entry) is bytes:
                    await self.write(entry)
                    self.queued_bytes -= len(entry)
                else:
                    await entry()
            elif self._latest_due and self._latest is not None:
                self._latest_due = False
                self._busy = True
                await self._latest()
            else:
                self._entries = None
                return
            self._busy = False
