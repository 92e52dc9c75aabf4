"""One map viewer's outbox and writer: the tick hands it frames and never awaits its socket.

The outbox holds at most one pending positions frame. While the writer is idle it is the
shared, already-encoded frame (the same bytes every viewer gets); when the writer is behind, the
next tick's updates are merged into a private NPC → latest map instead of queueing behind it, so
the newest position always arrives and memory stays bounded by the number of NPCs. Other
messages (status, events, snapshots) go through a bounded queue, sent before positions; if it
overflows, what it held is dropped and the viewer is resynchronised with a fresh snapshot
once its writer gets there (it is closed only by the stall rule: no progress for 10 s). The
events it missed that way come again from the history (§6.5), after the last one it was sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from gateway.direct_ws import write_now
from gateway.history import Entry
from gateway.protocol import Area, CloseCode, Encoding, in_view, positions_frame
from gateway.telemetry import Telemetry
from gateway.types import PositionUpdate

log = logging.getLogger(__name__)

EVENT_QUEUE_MAX = 1024


class QueuedEvent:
    """An encoded history event; its place in the history tells how far a viewer has got.
    One object per encoding is shared by every viewer it is offered to."""

    __slots__ = ("epoch", "payload", "seq")

    def __init__(self, epoch: str, seq: int, payload: bytes) -> None:
        self.epoch = epoch
        self.seq = seq
        self.payload = payload


Queued = bytes | QueuedEvent | list[QueuedEvent]
Resync = Callable[["ViewerConnection"], Awaitable[None]]


class ViewerConnection:
    __slots__ = (
        "_events",
        "_frame",
        "_merged",
        "_resync",
        "_resync_due",
        "_task",
        "_updates",
        "_wake",
        "area",
        "closed",
        "dim",
        "encoding",
        "event_seq",
        "frames_merged",
        "frames_sent",
        "live_from",
        "messages_dropped",
        "offered_at",
        "opcode",
        "send_started",
        "sent_epoch",
        "sent_seq",
        "telemetry",
        "transport",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        encoding: Encoding,
        transport: Any,
        telemetry: Telemetry | None = None,
        resync: Resync | None = None,
    ) -> None:
        self.ws = ws
        self._resync = resync
        self._resync_due = False
        self.messages_dropped = 0
        self.telemetry = telemetry
        self.offered_at = 0.0  # monotonic time the pending positions were first offered
        self.encoding = encoding
        self.opcode = WSMsgType.TEXT if encoding is Encoding.JSON else WSMsgType.BINARY
        self.transport = transport
        self.dim: str | None = None
        self.area: Area | None = None
        self.event_seq = 0  # seq of the last history event offered to this viewer
        self.live_from = 0  # history seq when it went live: later events were offered live
        # The last history event handed to the socket: where a resync resumes the events.
        self.sent_epoch: str | None = None
        self.sent_seq = 0
        # Encoded messages; a list is a replay, sent in order, counted as one against the cap.
        self._events: deque[Queued] = deque()
        self._frame: bytes | None = None  # the shared encoded frame, while nothing is merged
        self._updates: dict[str, PositionUpdate] | None = None  # what the pending frame holds
        self._merged = False  # _updates is our private copy (safe to mutate)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.send_started: float | None = None  # monotonic time the current send began
        self.closed = False
        self.frames_sent = 0
        self.frames_merged = 0

    # -- called by the hub (never awaits) -----------------------------------------------------

    def offer_positions(self, frame: bytes, updates: dict[str, PositionUpdate]) -> None:
        """Queue a positions frame; if one is still pending, merge into it (latest wins)."""
        if self._updates is None:
            if self._idle() and write_now(self.ws, frame, self.opcode):
                self.frames_sent += 1
                if self.telemetry is not None:  # handed to the socket at once
                    self.telemetry.viewer_send_delay_seconds.observe(0.0)
                return
            self._frame, self._updates = frame, updates
            self.offered_at = time.monotonic()
        else:
            if not self._merged:
                self._updates = dict(self._updates)
                self._merged = True
            self._updates.update(updates)
            self._frame = None
            self.frames_merged += 1
            if self.telemetry is not None:
                self.telemetry.viewer_frames_merged.inc()
        self._wake.set()

    def offer_message(self, payload: bytes) -> None:
        """Queue an encoded non-position message. On overflow the queue is dropped (counted)
        and a resync is due: the state it described comes back as a fresh snapshot."""
        if self._idle() and self._updates is None and write_now(self.ws, payload, self.opcode):
            return
        self._enqueue(payload)

    def offer_event(self, event: QueuedEvent) -> None:
        """Queue a history event (as `offer_message`, remembering how far the viewer got)."""
        self.event_seq = event.seq
        if (
            self._idle()
            and self._updates is None
            and write_now(self.ws, event.payload, self.opcode)
        ):
            self.sent_epoch, self.sent_seq = event.epoch, event.seq
            return
        self._enqueue(event)

    def _enqueue(self, item: Queued) -> None:
        if len(self._events) >= EVENT_QUEUE_MAX and self._resync is not None:
            self.messages_dropped += len(self._events)
            self._events.clear()
            self._resync_due = True
        self._events.append(item)
        self._wake.set()

    def offer_replay(self, events: list[QueuedEvent]) -> None:
        """Queue recovered events as one item: a long replay must not trip the overflow rule
        meant for a viewer that stopped reading (the history bounds its size)."""
        if events:
            self._events.append(events)
            self._wake.set()

    def drop_queued_events(self) -> None:
        """Forget the history events still queued (a resync replays them from the history)."""
        self._events = deque(i for i in self._events if type(i) is bytes)

    def wants(self, entry: Entry) -> bool:
        """Whether this viewer's filter covers where the event's NPC was."""
        if self.dim is None and self.area is None:
            return True
        return entry.about is not None and in_view(entry.about, self.dim, self.area)

    def _idle(self) -> bool:
        """Nothing queued and no send in progress: a frame may go out at once, in order."""
        return (
            self._task is not None
            and self.send_started is None
            and not self._events
            and not self._resync_due
        )

    def reset_positions(self) -> None:
        """Drop the pending positions (a fresh snapshot supersedes them)."""
        self._frame, self._updates, self._merged = None, None, False

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_loop(), name="viewer-writer")

    def stalled_for(self, now: float) -> float:
        return 0.0 if self.send_started is None else now - self.send_started

    async def close(self, code: int, message: str) -> None:
        """Close the socket; abort it if the peer is too stuck to take a close frame."""
        if self.closed:
            return
        self.closed = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message.encode()), 2.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        # (After a protocol error the socket is lingering half-closed instead: see direct_ws.)
        if (
            self.transport is not None
            and not self.transport.is_closing()
            and self.ws.exception() is None
        ):
            self.transport.abort()

    # -- the writer task ----------------------------------------------------------------------

    async def _write_loop(self) -> None:
        ws = self.ws
        try:
            while not ws.closed:
                await self._wake.wait()
                self._wake.clear()
                if self._resync_due and self._resync is not None:
                    # Still due while it runs: nothing is written past the queue meanwhile,
                    # so what the viewer was last sent stays where the replay resumes.
                    await self._resync(self)
                    self._resync_due = False
                while self._events and not self._resync_due:  # an overflow: resync first
                    item = self._events.popleft()
                    if type(item) is bytes:
                        await self._send(item)
                    elif type(item) is QueuedEvent:
                        await self._send(item.payload)
                        self.sent_epoch, self.sent_seq = item.epoch, item.seq
                    else:
                        for event in item:
                            await self._send(event.payload)
                            self.sent_epoch, self.sent_seq = event.epoch, event.seq
                if self._updates is not None:
                    frame = self._frame
                    if frame is None:
                        ts_ms = int(time.time() * 1000)
                        frame = positions_frame(self._updates, ts_ms, self.encoding)
                    offered_at = self.offered_at
                    self.reset_positions()
                    await self._send(frame)
                    if self.telemetry is not None:
                        self.telemetry.viewer_send_delay_seconds.observe(
                            time.monotonic() - offered_at
                        )
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        except Exception:  # never let one viewer's writer fail silently
            log.exception("viewer writer failed")
            await self.close(CloseCode.POLICY, "internal error")

    async def _send(self, payload: bytes) -> None:
        self.send_started = time.monotonic()
        await self.ws.send_frame(payload, self.opcode)
        self.send_started = None
        self.frames_sent += 1
