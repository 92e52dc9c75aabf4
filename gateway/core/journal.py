"""A write-ahead journal of rows accepted but not yet in the database.

The metrics batcher holds up to a batch (and, while the database is down, a spool) of rows in
memory; a SIGKILL, an OOM kill or a crash would take them along. Each accepted row is also
appended here with one `write(2)` before the batcher counts it accepted: the kernel keeps the
bytes once the call returns, whatever happens to the process (not a power cut: no fsync, which
would cost a disk flush per row). When rows are written to the database they are `release`d:
a segment all of whose rows are released is truncated (the active one) or deleted; one partly
released gets a marker appended (an integer: how many of its first records are written), so
that a replay does not write them twice.

A segment's owner holds an exclusive `flock` on it while it lives; the kernel drops the lock
when the process dies. A replica starting on the same data directory (a restart, or a sibling
process) finds segments nobody holds, re-accepts their rows and deletes them: `adopt_orphans`.

Files are created under a temporary name and renamed once locked, so an orphan scan never
takes a segment that is being born. Records (arrays) and markers (integers) are msgpack values
back to back; one torn by the kill (the last `write` cut short) is ignored on reading.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

log = logging.getLogger(__name__)

SEGMENT_MAX_BYTES = 1 << 20  # a new segment past this: released ones are deleted whole
SUFFIX = ".seg"
TEMP_PREFIX = ".new-"
STALE_TEMP_S = 60.0  # an unlocked temporary file this old was left by a killed process

_names = itertools.count()


@dataclass(slots=True)
class _Segment:
    path: Path
    fd: int
    records: int = 0  # appended
    released: int = 0
    size: int = 0  # bytes appended


@dataclass(slots=True)
class Orphan:
    """A segment whose owner died: its records, and the lock that keeps others off it."""

    path: Path
    records: list[Any]
    _fd: int


class Journal:
    def __init__(self, directory: Path, prefix: str, segment_max_bytes: int = SEGMENT_MAX_BYTES):
        self.directory = directory
        self.prefix = prefix
        self.segment_max_bytes = segment_max_bytes
        self._segments: deque[_Segment] = deque()
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self.appended = 0
        self.adopted = 0  # records taken over from dead owners
        directory.mkdir(parents=True, exist_ok=True)

    # -- this process's records ----------------------------------------------------------------

    def append(self, record: Any) -> None:
        """Keep `record` on disk until `release` says it is written."""
        segment = self._segments[-1] if self._segments else None
        if segment is None or segment.size >= self.segment_max_bytes:
            segment = self._new_segment()
        data = self._pack(record)
        os.write(segment.fd, data)
        segment.records += 1
        segment.size += len(data)
        self.appended += 1

    def release(self, count: int) -> None:
        """The `count` oldest records kept are written (or given up, and counted, elsewhere)."""
        while count > 0 and self._segments:
            segment = self._segments[0]
            taken = min(count, segment.records - segment.released)
            segment.released += taken
            count -= taken
            if segment.released < segment.records:
                marker = self._pack(segment.released)
                os.write(segment.fd, marker)
                segment.size += len(marker)
                continue
            if len(self._segments) == 1:
                # The active segment, all written: empty it in place (no new file per batch).
                os.ftruncate(segment.fd, 0)
                segment.records = segment.released = segment.size = 0
                return
            self._segments.popleft()
            _remove(segment.path, segment.fd)

    @property
    def held(self) -> int:
        """Records kept and not yet released."""
        return sum(s.records - s.released for s in self._segments)

    @property
    def segments(self) -> int:
        return len(self._segments)

    def close(self) -> None:
        """Release the locks. Segments with records stay for the next start to adopt."""
        while self._segments:
            segment = self._segments.popleft()
            if segment.records == segment.released:
                _remove(segment.path, segment.fd)
            else:
                os.close(segment.fd)

    def _new_segment(self) -> _Segment:
        name = f"{self.prefix}-{os.getpid()}-{time.time_ns()}-{next(_names)}{SUFFIX}"
        temp = self.directory / (TEMP_PREFIX + name)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
        os.rename(temp, self.directory / name)
        segment = _Segment(self.directory / name, fd)
        self._segments.append(segment)
        return segment

    # -- what dead owners left ---------------------------------------------------------------

    def adopt_orphans(self) -> Iterator[Orphan]:
        """Each segment of this journal's prefix that no live process holds, locked for the
        caller, who re-accepts its records and then calls `discard`."""
        own = {s.path for s in self._segments}
        for path in sorted(self.directory.iterdir()):
            name = path.name
            if name.startswith(TEMP_PREFIX):
                self._remove_stale_temp(path)
                continue
            if not (name.startswith(self.prefix + "-") and name.endswith(SUFFIX)) or path in own:
                continue
            fd = _lock(path)
            if fd is None:
                continue  # a live owner
            records = _read_records(fd)
            self.adopted += len(records)
            yield Orphan(path, records, fd)

    def discard(self, orphan: Orphan) -> None:
        """The orphan's records are safe elsewhere (re-appended here): delete it."""
        _remove(orphan.path, orphan._fd)

    def _remove_stale_temp(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - path.stat().st_mtime < STALE_TEMP_S:
                return
            fd = _lock(path)
            if fd is not None:
                _remove(path, fd)


def _lock(path: Path) -> int | None:
    """An exclusive lock on `path` if nobody holds one; None if somebody does (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not path.exists():  # deleted by its previous holder between our open and our lock
        os.close(fd)
        return None
    return fd


def _read_records(fd: int) -> list[Any]:
    """The records of a segment that its markers do not say were written."""
    unpacker = msgpack.Unpacker(raw=False)
    while chunk := os.read(fd, 1 << 16):
        unpacker.feed(chunk)
    records = []
    released = 0
    try:
        for item in unpacker:
            if isinstance(item, int):
                released = max(released, item)
            else:
                records.append(item)
    except (ValueError, msgpack.UnpackException) as exc:  # a corrupt tail: keep what is whole
        log.warning("journal: unreadable record after %d: %s", len(records), exc)
    return records[released:]


def _remove(path: Path, fd: int) -> None:
    # Unlink while still holding the lock: nobody can adopt what we are removing.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.close(fd)
