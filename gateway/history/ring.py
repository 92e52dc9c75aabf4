"""The history window one replica keeps, and what a resuming viewer is owed. Pure: no I/O.

Entries are contiguous in seq. The window holds at most `max_events` entries no older than
`max_age_ms` (the smaller wins, §11). A viewer that last saw `{epoch, seq}` can be resumed
exactly when the epoch matches and every entry after `seq` is still held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice

from gateway.history.base import Entry


class HistoryRing:
    def __init__(self, max_events: int = 10_000, max_age_ms: int = 600_000) -> None:
        if max_events < 1 or max_age_ms < 1:
            raise ValueError("a history window needs at least one event and one millisecond")
        self.max_events = max_events
        self.max_age_ms = max_age_ms
        self.epoch: str | None = None
        self.last_seq = 0  # the newest seq of the epoch seen, kept when entries age out
        self._entries: deque[Entry] = deque()
        self.restarts = 0  # epoch changes and gaps: the window started over

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def oldest_seq(self) -> int | None:
        return self._entries[0].seq if self._entries else None

    def add(self, entry: Entry) -> bool:
        """Keep the entry; False when it starts the window over (new epoch, or a gap: a
        reader that fell behind the backend's cap). A repeat of a held seq is ignored."""
        if entry.epoch == self.epoch and entry.seq <= self.last_seq:
            return True  # already held (a backend re-reading after a reconnect)
        continuous = entry.epoch == self.epoch and entry.seq == self.last_seq + 1
        if not continuous:
            if self.epoch is not None:
                self.restarts += 1
            self._entries.clear()
            self.epoch = entry.epoch
        self._entries.append(entry)
        self.last_seq = entry.seq
        if len(self._entries) > self.max_events:
            self._entries.popleft()
        return continuous

    def trim(self, now_ms: int) -> None:
        """Forget entries older than the age limit."""
        cutoff = now_ms - self.max_age_ms
        entries = self._entries
        while entries and entries[0].ts_ms < cutoff:
            entries.popleft()

    def covers(self, epoch: str, seq: int, now_ms: int) -> bool:
        """Whether every entry after `seq` of `epoch` is held (nothing after it is fine)."""
        self.trim(now_ms)
        if epoch != self.epoch or seq < 0 or seq > self.last_seq:
            return False
        oldest = self.oldest_seq
        return seq == self.last_seq if oldest is None else seq >= oldest - 1

    def after(
        self,
        epoch: str,
        seq: int,
        now_ms: int,
        wanted: Callable[[Entry], bool] | None = None,
    ) -> list[Entry] | None:
        """The entries after `seq` (those `wanted`, in order), or None when they cannot all
        be given (another epoch, or the window no longer reaches back to `seq`)."""
        if not self.covers(epoch, seq, now_ms):
            return None
        oldest = self.oldest_seq
        if oldest is None:
            return []
        tail: Iterator[Entry] = islice(self._entries, seq + 1 - oldest, None)
        return [e for e in tail if wanted is None or wanted(e)]
