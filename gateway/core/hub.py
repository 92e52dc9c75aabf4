"""Local connections of one replica and the encode-once broadcast to its viewers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gateway.core.links import BotLink, QueuedEvent, ViewerLink
from gateway.core.task_owner import TaskOwner
from gateway.core.telemetry import Telemetry
from gateway.history import Entry
from gateway.protocol import Area, CloseCode, Encoding, encode, in_view, positions_frame
from gateway.types import PositionUpdate

log = logging.getLogger(__name__)


def _was_in_view(
    previous: Mapping[str, PositionUpdate] | None, npc: str, dim: str | None, area: Area | None
) -> bool:
    if previous is None:
        return False
    before = previous.get(npc)
    return before is not None and in_view(before, dim, area)


class Hub:
    def __init__(
        self,
        stall_timeout_s: float = 10.0,
        telemetry: Telemetry | None = None,
        tasks: TaskOwner | None = None,
        bot_stall_s: float = 10.0,
    ) -> None:
        self.telemetry = telemetry or Telemetry()
        self.tasks = tasks or TaskOwner("hub")  # the closes it starts
        self.bots: dict[str, BotLink] = {}
        self.connections_closed = 0  # bots and viewers gone since start (the GC's cue)
        # In the order they came (a dict of keys): each tick writes to them in that order,
        # as a plain service walking its list of sockets would.
        self.viewers: dict[ViewerLink, None] = {}
        self.stall_timeout_s = stall_timeout_s
        self.frames_broadcast = 0
        self.bot_stall_s = bot_stall_s
        self.bots_closed_slow = 0
        self._closing_slow: set[BotLink] = set()
        # Called when the set of viewers or a viewer's filter changes (region subscriptions).
        self.on_views_changed: Callable[[], None] | None = None

    # -- bots ---------------------------------------------------------------------------------

    def attach_bot(self, link: BotLink) -> BotLink | None:
        """Register a bot session; return the session it replaces, if any."""
        previous = self.bots.get(link.npc_id)
        self.bots[link.npc_id] = link
        return previous

    def detach_bot(self, link: BotLink) -> bool:
        """Forget the session if it is still the current one for its NPC."""
        self._closing_slow.discard(link)
        if self.bots.get(link.npc_id) is link:
            del self.bots[link.npc_id]
            self.connections_closed += 1
            return True
        return False

    # -- viewers ------------------------------------------------------------------------------

    def add_viewer(self, viewer: ViewerLink) -> None:
        self.viewers[viewer] = None
        self.views_changed()

    def remove_viewer(self, viewer: ViewerLink) -> None:
        if viewer in self.viewers:
            del self.viewers[viewer]
            self.connections_closed += 1
            self.views_changed()

    def views_changed(self) -> None:
        if self.on_views_changed is not None:
            self.on_views_changed()

    def broadcast_positions(
        self,
        window: dict[str, PositionUpdate],
        ts_ms: int,
        previous: Mapping[str, PositionUpdate] | None = None,
    ) -> None:
        """Send one window to every viewer whose subscription it touches.

        Each distinct (encoding, dim, area) group gets one encoding of its frame; every viewer
        in the group is handed the same bytes. Never awaits. `previous` holds each NPC's last
        position before this window: an NPC that was inside a filter and is now outside goes
        to that filter's viewers once more, so they can drop it (§11). Whether it was inside
        depends only on the position and the filter, so every viewer of the group agrees.
        """
        if not window or not self.viewers:
            return
        started = time.perf_counter()
        groups: dict[tuple[Encoding, str | None, Area | None], list[ViewerLink]]
        groups = defaultdict(list)
        for viewer in self.viewers:
            groups[(viewer.encoding, viewer.dim, viewer.area)].append(viewer)
        filtered: dict[tuple[str | None, Area | None], dict[str, PositionUpdate]] = {}
        for (encoding, dim, area), members in groups.items():
            view = (dim, area)
            updates = filtered.get(view)
            if updates is None:
                if dim is None and area is None:
                    updates = window
                else:
                    updates = {
                        k: u
                        for k, u in window.items()
                        if in_view(u, dim, area) or _was_in_view(previous, k, dim, area)
                    }
                filtered[view] = updates
            if not updates:
                continue
            frame = positions_frame(updates, ts_ms, encoding)
            for viewer in members:
                viewer.offer_positions(frame, updates)
            self.frames_broadcast += 1
        self.telemetry.broadcast_seconds.observe(time.perf_counter() - started)

    def broadcast_message(
        self, message: dict[str, Any], about: PositionUpdate | None = None
    ) -> None:
        """Send a non-position message to every viewer (those filtering by area only if the
        NPC it is about was last seen inside their area). Encoded once per encoding."""
        encoded: dict[Encoding, bytes] = {}
        for viewer in self.viewers:
            if (viewer.dim is not None or viewer.area is not None) and (
                about is None or not in_view(about, viewer.dim, viewer.area)
            ):
                continue
            payload = encoded.get(viewer.encoding)
            if payload is None:
                payload = encoded[viewer.encoding] = encode(message, viewer.encoding)
            viewer.offer_message(payload)

    def broadcast_event(self, entry: Entry) -> None:
        """Send a numbered event to every viewer whose filter covers where its NPC was."""
        encoded: dict[Encoding, QueuedEvent] = {}
        for viewer in self.viewers:
            if not viewer.wants(entry):
                continue
            event = encoded.get(viewer.encoding)
            if event is None:
                payload = encode(entry.message, viewer.encoding)
                event = encoded[viewer.encoding] = QueuedEvent(entry.epoch, entry.seq, payload)
            viewer.offer_event(event)

    # -- slow-viewer policy -------------------------------------------------------------------

    def _close_slow(self, viewer: ViewerLink, why: str) -> None:
        self.remove_viewer(viewer)
        self.telemetry.viewers_closed_slow.inc()
        log.info("closing slow viewer: %s", why)
        self.tasks.spawn(viewer.close(CloseCode.POLICY, why), "close-slow-viewer")

    def close_stalled(self, now: float | None = None) -> int:
        """Close viewers whose current send has made no progress for the stall timeout."""
        now = time.monotonic() if now is None else now
        stalled = [v for v in self.viewers if v.stalled_for(now) >= self.stall_timeout_s]
        for viewer in stalled:
            self._close_slow(viewer, f"no progress for {self.stall_timeout_s:.0f} s")
        return len(stalled) + self._close_stalled_bots(now)

    def _close_stalled_bots(self, now: float) -> int:
        """Bots that have not read their output for `bot_stall_s` are closed with 1008, like
        slow viewers: what waits for them is bounded in bytes, and it must not wait forever."""
        limit = self.bot_stall_s
        stalled = [
            b
            for b in self.bots.values()
            if b not in self._closing_slow and b.stalled_for(now) >= limit
        ]
        for bot in stalled:
            self._closing_slow.add(bot)
            self.bots_closed_slow += 1
            log.info("closing a bot that does not read: %s", bot.npc_id)
            self.tasks.spawn(
                bot.close(CloseCode.POLICY, f"no progress for {limit:.0f} s"), "close-slow-bot"
            )
        return len(stalled)

    def sweep_idle_bots(self, idle_s: float, now: float | None = None) -> int:
        """Ping bots quiet for `idle_s`; close those quiet for twice that (a dead peer)."""
        now = time.monotonic() if now is None else now
        dead = 0
        for bot in list(self.bots.values()):
            quiet = now - bot.last_seen
            if quiet >= 2 * idle_s:
                dead += 1
                self.tasks.spawn(
                    bot.close(CloseCode.GOING_AWAY, "no sign of life"), "close-dead-bot"
                )
            elif quiet >= idle_s:
                bot.ping()
        return dead

    async def watch_stalls(self, interval_s: float = 0.5, bot_idle_s: float = 30.0) -> None:
        sweep_every = max(1, round(bot_idle_s / 3 / interval_s))
        rounds = 0
        while True:
            await asyncio.sleep(interval_s)
            self.close_stalled()
            rounds += 1
            if rounds % sweep_every == 0:
                self.sweep_idle_bots(bot_idle_s)

    async def close_all(self, code: int, message: str) -> None:
        """Close every bot and viewer (shutdown)."""
        closers: Iterable[Any] = [*self.bots.values(), *self.viewers]
        await asyncio.gather(*(c.close(code, message) for c in closers), return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        return {"npcs": len(self.bots), "viewers": len(self.viewers)}
