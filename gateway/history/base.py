"""The history interface.

Guarantees every backend gives:
- `append` never awaits: the event is numbered (`seq`, one more than the previous event of the
  same `epoch`, whichever replica appended it) and handed to `on_entry` of every replica sharing
  the history, in seq order, each entry once.
- An epoch names one unbroken numbering: when the backend loses its history (Redis restarted
  empty), numbering starts again under a new epoch, so an old `{epoch, seq}` never matches.
- While the backend is unreachable, appended events wait in a bounded queue (counted in
  `dropped` beyond it) and are numbered when it is back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    """One numbered event. `about` is where its NPC was (dim, x, z) when it was emitted: area
    filters are applied to it, live and on replay alike."""

    epoch: str
    seq: int
    ts_ms: int
    message: dict[str, Any]  # the `event` message viewers get, `epoch` and `seq` included
    about: dict[str, Any] | None


OnEntry = Callable[[Entry], None]  # called on the event loop, in seq order


class History(Protocol):
    backend: str

    async def start(self, on_entry: OnEntry) -> None:
        """Load what the backend already holds (handed to `on_entry`), then follow it."""

    def append(self, message: dict[str, Any], about: dict[str, Any] | None) -> None: ...

    async def close(self) -> None: ...

    def stats(self) -> dict[str, Any]:
        """`backend`, `appended`, `dropped`, `connected`."""
