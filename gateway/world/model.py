"""The shared world model of one replica (§9), owned by the event loop.

Sections live in a :class:`SectionArena` that the pathfinding workers map; this object is the
arena's single writer and keeps what the loop needs besides: dimension ids, the known bounds
per dimension, which sections changed since the last tick (written and published once per tick,
never per message), and per-column height tiles for the heightmap, recomputed only when a
section of their column changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.protocol import ErrorCode, ProtocolError
from gateway.world.arena import SectionArena
from gateway.world.box import Box, Cell, search_box
from gateway.world.sections import (
    MAX_DIMS,
    NO_HEIGHT,
    SECTION_BYTES,
    SIDE,
    Blocks,
    Chunk,
    SectionKey,
    column_tops,
    pack_key,
    section_of,
    set_bit,
)

MAX_HEIGHTMAP_SIDE = 512  # columns per side of one heightmap answer (§9)

# One changed section as it is persisted and published: (dim, cx, cy, cz, 512 bytes).
SectionRow = tuple[str, int, int, int, bytes]


@dataclass(slots=True)
class _Dim:
    id: int
    count: int = 0
    lo: list[int] = field(default_factory=lambda: [1 << 30] * 3)  # least section coordinates
    hi: list[int] = field(default_factory=lambda: [-(1 << 30)] * 3)
    columns: dict[tuple[int, int], set[int]] = field(default_factory=dict)  # (cx,cz) -> cys
    tiles: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # cached tops

    def bounds(self) -> Box | None:
        if not self.count:
            return None
        lo, hi = self.lo, self.hi
        return lo[0] * SIDE, lo[1] * SIDE, lo[2] * SIDE, *(h * SIDE + SIDE - 1 for h in hi)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class ModelRef:
    """What a path request without a world sends to a worker: a few hundred bytes."""

    arena: str  # the arena file the worker maps (once)
    dim_id: int
    box: Box


class WorldModel:
    def __init__(self, capacity: int, *, margin_xz: int = 64, margin_y: int = 32) -> None:
        self.arena = SectionArena.create(capacity)
        self.margin_xz = margin_xz
        self.margin_y = margin_y
        self._dims: dict[str, _Dim] = {}
        self._dirty: dict[tuple[str, SectionKey], None] = {}  # ordered set, this tick's changes
        self.sections_received = 0
        self.sections_remote = 0
        self.changes_applied = 0
        self.changes_unknown = 0  # cells of sections nobody reported: nothing to change
        self.dropped_full = 0  # sections refused because the arena is full

    def close(self) -> None:
        self.arena.close()

    # -- writes -----------------------------------------------------------------------------------

    def _dim(self, name: str, ref: Any = None) -> _Dim:
        dim = self._dims.get(name)
        if dim is None:
            if len(self._dims) >= MAX_DIMS:
                raise ProtocolError(
                    ErrorCode.BAD_MESSAGE, f"at most {MAX_DIMS} dimensions are mapped", ref
                )
            dim = self._dims[name] = _Dim(len(self._dims) + 1)
        return dim

    def _store(self, name: str, key: SectionKey, solid: bytes, ref: Any = None) -> bool:
        dim = self._dim(name, ref)
        packed = pack_key(dim.id, key)
        fresh = self.arena.slot(packed) is None
        if self.arena.put(packed, solid) is None:
            self.dropped_full += 1
            return False
        column = (key[0], key[2])
        if fresh:
            dim.count += 1
            for i in range(3):
                dim.lo[i] = min(dim.lo[i], key[i])
                dim.hi[i] = max(dim.hi[i], key[i])
            dim.columns.setdefault(column, set()).add(key[1])
        dim.tiles.pop(column, None)
        return True

    def accept_chunk(self, chunk: Chunk, ref: Any = None) -> bool:
        """A bot's section: stored at once (workers see it), written and published next tick.
        False when the arena is full (counted in `dropped`)."""
        self.sections_received += 1
        if not self._store(chunk.dim, chunk.key, chunk.solid, ref):
            return False
        self._dirty[(chunk.dim, chunk.key)] = None
        return True

    def accept_blocks(self, blocks: Blocks) -> int:
        """Single-cell changes of known sections; how many were applied."""
        dim = self._dims.get(blocks.dim)
        applied = 0
        for x, y, z, solid in blocks.changes:
            key, bit = section_of(x, y, z)
            slot = None if dim is None else self.arena.slot(pack_key(dim.id, key))
            if slot is None or dim is None:
                self.changes_unknown += 1
                continue
            set_bit(self.arena.section(slot), bit, solid)
            self.arena.changed()
            dim.tiles.pop((key[0], key[2]), None)
            self._dirty[(blocks.dim, key)] = None
            applied += 1
        self.changes_applied += applied
        return applied

    def apply_rows(self, rows: Iterable[SectionRow]) -> int:
        """Sections from another replica (or the store at start): stored, not re-published."""
        n = 0
        for name, cx, cy, cz, solid in rows:
            if len(solid) == SECTION_BYTES and self._store(name, (cx, cy, cz), bytes(solid)):
                n += 1
        self.sections_remote += n
        return n

    def cut(self) -> list[SectionRow]:
        """This tick's changed sections, with their current bytes; the set starts over."""
        if not self._dirty:
            return []
        dirty, self._dirty = self._dirty, {}
        rows: list[SectionRow] = []
        for name, key in dirty:
            slot = self.arena.slot(pack_key(self._dims[name].id, key))
            if slot is not None:
                rows.append((name, *key, self.arena.section(slot).tobytes()))
        return rows

    # -- reads ------------------------------------------------------------------------------------

    def summary(self, name: str) -> dict[str, Any]:
        dim = self._dims.get(name)
        bounds = None if dim is None else dim.bounds()
        return {
            "sections": 0 if dim is None else dim.count,
            "bounds": list(bounds) if bounds else None,
        }

    def path_ref(self, name: str, start: Cell, goal: Cell) -> ModelRef | None:
        """The worker's part of a request on the model; None when start or goal lies outside
        what is known of the dimension (no path can exist)."""
        dim = self._dims.get(name)
        bounds = None if dim is None else dim.bounds()
        if dim is None or bounds is None:
            return None
        box = search_box(start, goal, bounds, self.margin_xz, self.margin_y)
        return None if box is None else ModelRef(self.arena.path, dim.id, box)

    def heightmap(self, name: str, x0: int, z0: int, x1: int, z1: int) -> list[int | None]:
        """Top solid y per column of the inclusive area, row by row in z; None where unknown."""
        w, h = x1 - x0 + 1, z1 - z0 + 1
        out = np.full((h, w), NO_HEIGHT, np.int32)
        dim = self._dims.get(name)
        if dim is not None:
            for cz in range(z0 >> 4, (z1 >> 4) + 1):
                for cx in range(x0 >> 4, (x1 >> 4) + 1):
                    tile = self._tile(dim, cx, cz)
                    if tile is None:
                        continue
                    ax0, az0 = max(x0, cx * SIDE), max(z0, cz * SIDE)
                    ax1, az1 = min(x1, cx * SIDE + SIDE - 1), min(z1, cz * SIDE + SIDE - 1)
                    out[az0 - z0 : az1 - z0 + 1, ax0 - x0 : ax1 - x0 + 1] = tile[
                        az0 - cz * SIDE : az1 - cz * SIDE + 1, ax0 - cx * SIDE : ax1 - cx * SIDE + 1
                    ]
        flat = out.ravel().tolist()
        return [None if v == NO_HEIGHT else v for v in flat]

    def _tile(self, dim: _Dim, cx: int, cz: int) -> np.ndarray | None:
        tile = dim.tiles.get((cx, cz))
        if tile is not None:
            return tile
        cys = dim.columns.get((cx, cz))
        if not cys:
            return None
        tile = np.full((SIDE, SIDE), NO_HEIGHT, np.int16)
        for cy in sorted(cys):  # upward: a higher section's solid cells win
            slot = self.arena.slot(pack_key(dim.id, (cx, cy, cz)))
            if slot is not None:
                tops = column_tops(self.arena.section(slot), cy * SIDE)
                tile = np.where(tops != NO_HEIGHT, tops, tile)
        dim.tiles[(cx, cz)] = tile
        return tile

    def stats(self) -> dict[str, Any]:
        return {
            "dimensions": len(self._dims),
            "sections": self.arena.count,
            "capacity": self.arena.capacity,
            "sectionsReceived": self.sections_received,
            "sectionsFromPeers": self.sections_remote,
            "changesApplied": self.changes_applied,
            "changesUnknown": self.changes_unknown,
            "dropped": self.dropped_full,
            "pendingSections": len(self._dirty),
        }
