"""Embedded history: numbering in process memory. The window itself is the node's ring.

Replicas in one process (tests) share one `MemoryHistoryLog`, as they share a memory bus.
A restarted process has a new epoch: what a viewer saw before is not in this one's history.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from typing import Any

from gateway.history.base import Entry, OnEntry
from gateway.per_owner import PerOwner


class MemoryHistoryLog:
    """Numbers events and hands each to every attached history, synchronously, in order."""

    def __init__(self, max_events: int = 10_000) -> None:
        self.epoch = uuid.uuid4().hex[:16]
        self.seq = 0
        self._followers: list[OnEntry] = []
        self._recent: deque[Entry] = deque(maxlen=max_events)  # for a replica attaching late

    def attach(self, on_entry: OnEntry) -> None:
        for entry in self._recent:
            on_entry(entry)
        self._followers.append(on_entry)

    def detach(self, on_entry: OnEntry) -> None:
        if on_entry in self._followers:
            self._followers.remove(on_entry)

    def append(self, message: dict[str, Any], about: dict[str, Any] | None) -> Entry:
        self.seq += 1
        entry = Entry(
            self.epoch,
            self.seq,
            int(time.time() * 1000),
            dict(message, epoch=self.epoch, seq=self.seq),
            about,
        )
        self._recent.append(entry)
        for follower in list(self._followers):
            follower(entry)
        return entry


# One log per owner (the in-process bus broker replicas share).
shared_log = PerOwner(MemoryHistoryLog)


class MemoryHistory:
    backend = "memory"

    def __init__(self, log: MemoryHistoryLog | None = None) -> None:
        self._log = log or MemoryHistoryLog()
        self._on_entry: OnEntry | None = None
        self.appended = 0

    async def start(self, on_entry: OnEntry) -> None:
        self._on_entry = on_entry
        self._log.attach(on_entry)

    def append(self, message: dict[str, Any], about: dict[str, Any] | None) -> None:
        self.appended += 1
        self._log.append(message, about)

    async def close(self) -> None:
        if self._on_entry is not None:
            self._log.detach(self._on_entry)
            self._on_entry = None

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "appended": self.appended,
            "dropped": 0,
            "connected": True,
        }
