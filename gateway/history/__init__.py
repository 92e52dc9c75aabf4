"""Event history (§11): one ordered, numbered stream of `event`s for the whole gateway.

`ring` is the pure core (what is kept, what a resuming viewer is owed); `memory` and `redis` are
the two backends behind the `History` interface in `base`.
"""

from gateway.history.base import Entry, History, OnEntry
from gateway.history.memory import MemoryHistory
from gateway.history.ring import HistoryRing

__all__ = ["Entry", "History", "HistoryRing", "MemoryHistory", "OnEntry"]
