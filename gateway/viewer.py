"""One map viewer's output: the tick hands it frames and never awaits its socket.

Frames go through the viewer's `Outbox` (written at once while the socket keeps up). It holds
at most one pending positions frame, its latest frame: while the writer is idle that is the
shared, already-encoded frame (the same bytes every viewer gets); when the writer is behind,
the next tick's updates are merged into a private NPC → latest map instead of queueing behind
it, so the newest position always arrives and memory stays bounded by the number of NPCs.
Other messages (status, events, snapshots) queue before positions, at most EVENT_QUEUE_MAX; on
overflow what was queued is dropped and the viewer is resynchronised with a fresh snapshot
once its writer gets there (it is closed only by the stall rule: no progress for 10 s). The
events it missed that way come again from the history (§11), after the last one it was sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.core.links import QueuedEvent
from gateway.core.telemetry import Telemetry
from gateway.history import Entry
from gateway.outbox import Outbox
from gateway.protocol import Area, CloseCode, Encoding, in_view, positions_frame
from gateway.sessions import frame_type_of
from gateway.types import PositionUpdate

log = logging.getLogger(__name__)

EVENT_QUEUE_MAX = 1024  # queued messages (a replay counts as one) before a resync instead


Resync = Callable[["ViewerConnection"], Awaitable[None]]


class _SendEvents:
    """An outbox step: send history events in order, remembering the last one handed over."""

    __slots__ = ("events", "viewer")

    def __init__(self, viewer: ViewerConnection, events: list[QueuedEvent]) -> None:
        self.viewer = viewer
        self.events = events

    async def __call__(self) -> None:
        viewer = self.viewer
        for event in self.events:
            await viewer.outbox.write(event.payload)
            viewer.sent_epoch, viewer.sent_seq = event.epoch, event.seq


class ViewerConnection:
    __slots__ = (
        "_frame",
        "_merged",
        "_resync",
        "_resync_due",
        "_updates",
        "area",
        "closed",
        "dim",
        "encoding",
        "event_seq",
        "live_from",
        "messages_dropped",
        "offered_at",
        "outbox",
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
        resync: Resync,
        telemetry: Telemetry,
    ) -> None:
        self.ws = ws
        self._resync = resync
        self._resync_due = False  # a resync step is queued or running
        self.messages_dropped = 0
        self.telemetry = telemetry
        self.offered_at = 0.0  # monotonic time the pending positions were first offered
        self.encoding = encoding
        self.outbox = Outbox(
            ws,
            frame_type_of(encoding),
            latest=self._send_positions,
            failed=self._failed,
            name="viewer-writer",
        )
        self.transport = transport
        self.dim: str | None = None
        self.area: Area | None = None
        self.event_seq = 0  # seq of the last history event offered to this viewer
        self.live_from = 0  # history seq when it went live: later events were offered live
        # The last history event handed to the socket: where a resync resumes the events.
        self.sent_epoch: str | None = None
        self.sent_seq = 0
        self._frame: bytes | None = None  # the shared encoded frame, while nothing is merged
        self._updates: dict[str, PositionUpdate] | None = None  # what the pending frame holds
        self._merged = False  # _updates is our private copy (safe to mutate)
        self.closed = False

    # -- called by the hub (never awaits) -----------------------------------------------------

    def offer_positions(self, frame: bytes, updates: dict[str, PositionUpdate]) -> None:
        """Queue a positions frame; if one is still pending, merge into it (latest wins)."""
        if self._updates is None:
            if self.outbox.try_now(frame):
                self.telemetry.viewer_send_delay_seconds.observe(0.0)  # handed over at once
                return
            self._frame, self._updates = frame, updates
            self.offered_at = time.monotonic()
            self.outbox.latest_due()
        else:
            if not self._merged:
                self._updates = dict(self._updates)
                self._merged = True
            self._updates.update(updates)
            self._frame = None
            self.telemetry.viewer_frames_merged.inc()

    def offer_message(self, payload: bytes) -> None:
        """Queue an encoded non-position message. On overflow the queue is dropped (counted)
        and a resync is due: the state it described comes back as a fresh snapshot."""
        if not self.outbox.try_now(payload):
            self._enqueue(payload)

    def offer_event(self, event: QueuedEvent) -> None:
        """Queue a history event (as `offer_message`, remembering how far the viewer got)."""
        self.event_seq = event.seq
        if self.outbox.try_now(event.payload):
            self.sent_epoch, self.sent_seq = event.epoch, event.seq
        else:
            self._enqueue(_SendEvents(self, [event]))

    def _enqueue(self, entry: bytes | _SendEvents) -> None:
        outbox = self.outbox
        if len(outbox) >= EVENT_QUEUE_MAX:
            self.messages_dropped += outbox.clear()
            if not self._resync_due:
                self._resync_due = True
                outbox.queue(self._resync_step)
        outbox.queue(entry)

    def offer_replay(self, events: list[QueuedEvent]) -> None:
        """Queue recovered events as one item: a long replay must not trip the overflow rule
        meant for a viewer that stopped reading (the history bounds its size)."""
        if events:
            self.outbox.queue(_SendEvents(self, events))

    def drop_queued_events(self) -> None:
        """Forget the history events still queued (a resync replays them from the history)."""
        self.outbox.keep(lambda entry: type(entry) is not _SendEvents)

    def wants(self, entry: Entry) -> bool:
        """Whether this viewer's filter covers where the event's NPC was."""
        if self.dim is None and self.area is None:
            return True
        return entry.about is not None and in_view(entry.about, self.dim, self.area)

    def reset_positions(self) -> None:
        """Drop the pending positions (a fresh snapshot supersedes them)."""
        self._frame, self._updates, self._merged = None, None, False
        self.outbox.latest_due(False)

    def start(self) -> None:
        """Welcome and snapshot are queued: from now on frames leave."""
        self.outbox.open()

    def stalled_for(self, now: float) -> float:
        return self.outbox.stalled_for(now)

    async def close(self, code: int, message: str) -> None:
        """Close the socket; abort it if the peer is too stuck to take a close frame."""
        if self.closed:
            return
        self.closed = True
        self.outbox.cancel()
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

    # -- what the writer task runs ------------------------------------------------------------

    async def _resync_step(self) -> None:
        # Still due while it runs: what it queues waits behind it, so what the viewer was last
        # sent stays where the replay resumes.
        try:
            await self._resync(self)
        finally:
            self._resync_due = False

    async def _send_positions(self) -> None:
        """The pending positions frame (encoded now if ticks were merged into it)."""
        updates = self._updates
        if updates is None:
            return
        frame = self._frame
        if frame is None:
            frame = positions_frame(updates, int(time.time() * 1000), self.encoding)
        offered_at = self.offered_at
        self.reset_positions()
        await self.outbox.write(frame)
        self.telemetry.viewer_send_delay_seconds.observe(time.monotonic() - offered_at)

    async def _failed(self) -> None:
        """A bug in the writer (logged by the outbox): the viewer cannot trust its picture."""
        await self.close(CloseCode.POLICY, "internal error")
