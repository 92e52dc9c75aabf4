"""The world model's memory: fixed 512-byte slots plus an index, in one memory-mapped file.

The gateway process is the only writer; pathfinding workers map the same file once (read only)
and read sections in place, so a path request carries a file name and a few numbers instead of
a world. Layout: a 64-byte header, the index (an open-addressing table of int64 keys and int32
slots, linear probing, never deleted from), then ``capacity`` slots of 512 bytes.

Readers never lock: the writer fills a slot's bytes, then the slot number, then the key (aligned
stores; x86 keeps stores in order, so a reader that sees the key sees the slot and its bytes).
A section replaced while a worker reads it may be seen half old, half new — as if read a moment
earlier or later, which a world that changes under a search allows anyway.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from gateway.world.sections import SECTION_BYTES

MAGIC = b"AICWRLD1"
_HEADER = struct.Struct("<8sIII")  # magic, capacity, table size, (reserved)
_GENERATION_AT = 24  # uint64: bumped by the writer on every change (readers' cache key)
HEADER_BYTES = 64
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def _table_size(capacity: int) -> int:
    size = 1
    while size < 2 * capacity:  # at most half full: short probe chains
        size <<= 1
    return size


def arena_bytes(capacity: int) -> int:
    """Bytes of the file for `capacity` sections (index included)."""
    return HEADER_BYTES + _table_size(capacity) * 12 + capacity * SECTION_BYTES


def _shm_dir() -> str | None:
    # /dev/shm keeps the pages in memory (no write-back to a disk); elsewhere, the temp dir.
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class SectionArena:
    """Sections by packed key (see ``sections.pack_key``). Create with :meth:`create` (the
    writer) or :meth:`attach` (a reader, in a worker)."""

    def __init__(self, path: str, mm: mmap.mmap, writable: bool) -> None:
        magic, capacity, table, _ = _HEADER.unpack_from(mm, 0)
        if magic != MAGIC:
            raise ValueError(f"{path} is not a world arena")
        self.path = path
        self.capacity = capacity
        self.table = table
        self._bits = table.bit_length() - 1
        self._mm = mm
        self.writable = writable
        off = HEADER_BYTES
        self.keys = np.frombuffer(mm, np.int64, table, off)
        off += table * 8
        self.slots = np.frombuffer(mm, np.int32, table, off)
        off += table * 4
        self.data = np.frombuffer(mm, np.uint8, capacity * SECTION_BYTES, off).reshape(
            capacity, SECTION_BYTES
        )
        self._slot_of: dict[int, int] = {}  # the writer's own copy of the index
        self.count = 0
        self._generation = np.frombuffer(mm, np.uint64, 1, _GENERATION_AT)

    @classmethod
    def create(cls, capacity: int, directory: str | None = None) -> SectionArena:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        fd, path = tempfile.mkstemp(prefix="aicraft-world-", dir=directory or _shm_dir())
        try:
            size = arena_bytes(capacity)
            os.ftruncate(fd, size)  # sparse: a page costs memory only once written
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        _HEADER.pack_into(mm, 0, MAGIC, capacity, _table_size(capacity), 0)
        return cls(path, mm, writable=True)

    @classmethod
    def attach(cls, path: str) -> SectionArena:
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return cls(path, mm, writable=False)

    def close(self) -> None:
        """Unmap; the writer also removes the file (mapped readers keep their pages)."""
        self.keys = self.slots = self.data = self._generation = None  # type: ignore[assignment]
        try:
            self._mm.close()
        except BufferError:
            pass  # a view is still alive somewhere; the mapping goes with the process
        if self.writable:
            Path(self.path).unlink(missing_ok=True)

    # -- writer ----------------------------------------------------------------------------------

    def _home(self, packed: int) -> int:
        return ((packed * _GOLDEN) & _MASK64) >> (64 - self._bits)

    @property
    def generation(self) -> int:
        """Changes so far: a reader that saw the same number saw the same sections."""
        return int(self._generation[0])

    def changed(self) -> None:
        """Call after writing into a slot's view directly (single cells)."""
        self._generation[0] += 1

    def put(self, packed: int, bitset: bytes) -> int | None:
        """Store (or replace) a section; its slot, or None when the arena is full."""
        slot = self._slot_of.get(packed)
        if slot is not None:
            self.data[slot] = np.frombuffer(bitset, np.uint8)
            self.changed()
            return slot
        if self.count >= self.capacity:
            return None
        slot = self.count
        self.data[slot] = np.frombuffer(bitset, np.uint8)
        i = self._home(packed)
        mask = self.table - 1
        while self.keys[i] != 0:
            i = (i + 1) & mask
        self.slots[i] = slot  # slot before key: a reader that sees the key sees the slot
        self.keys[i] = packed
        self._slot_of[packed] = slot
        self.count += 1
        self.changed()
        return slot

    def slot(self, packed: int) -> int | None:
        """The writer's slot for a key (None if unknown)."""
        return self._slot_of.get(packed)

    def section(self, slot: int) -> np.ndarray:
        """The 512 bytes of a slot, as a live view (writes go straight to the readers)."""
        return self.data[slot]  # type: ignore[no-any-return]

    # -- readers ---------------------------------------------------------------------------------

    def lookup(self, packed: np.ndarray) -> np.ndarray:
        """Slots of many keys at once (int64 array in, int32 array out, -1 where unknown)."""
        keys = packed.astype(np.int64)
        mask = self.table - 1
        with np.errstate(over="ignore"):  # the multiplicative hash wraps on purpose
            home = (keys.astype(np.uint64) * np.uint64(_GOLDEN)) >> np.uint64(64 - self._bits)
        idx = home.astype(np.int64)
        out = np.full(keys.shape, -1, np.int32)
        todo = np.arange(keys.size)
        for _ in range(self.table):  # bounded by the table size; chains are short
            if todo.size == 0:
                break
            found = self.keys[idx]
            hit = found == keys[todo]
            out[todo[hit]] = self.slots[idx[hit]]
            going = ~hit & (found != 0)
            todo = todo[going]
            idx = (idx[going] + 1) & mask
        return out
