"""The `world` of a path request (§9), validated and decoded into a compact grid.

Pure: no I/O, no clock. `decode_world` turns the wire map into a :class:`Grid` (one byte per
cell, 1 = solid) or raises ``ProtocolError(BAD_MESSAGE)``. It runs inside a worker process,
so the cost of base64 and of per-cell checks never lands on the gateway's event loop.

Grid layout: flat index ``((py * sz) + pz) * sx + px`` (the contract's bitset order), where
``px = x - x0``, ``pz = z - z0`` and ``py = y - y0 + PAD_BELOW``. The volume is padded with air
layers in y only, so the A* reads the cells a move needs (up to 4 below and 2 above a standing
cell) without bounds checks; x/z edges are handled by the search itself.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from gateway.protocol import MAX_COORD, ErrorCode, ProtocolError

MAX_CELLS = 16 * 1024 * 1024  # cap on the described volume (input cells, before padding)
MAX_SOLID_LIST = 1_000_000  # cap on the list encoding's length
PAD_BELOW = 4  # a drop of 3 reads the cell 4 below the standing cell
PAD_ABOVE = 3  # a step up reads 2 above the top standing layer (which is y0+sy)

# byte -> its 8 bits as 8 bytes of 0/1, least significant bit first (mask 1 << (i & 7)).
_UNPACK = tuple(bytes((b >> k) & 1 for k in range(8)) for b in range(256))


@dataclass(frozen=True, slots=True)
class Grid:
    """Solid cells of a box, air everywhere else. Coordinates are world block coordinates."""

    x0: int
    y0: int
    z0: int
    sx: int
    sy: int  # described layers; the array has PAD_BELOW + sy + PAD_ABOVE layers
    sz: int
    solid: bytes | bytearray

    @property
    def layer(self) -> int:
        """Index stride of one step in y."""
        return self.sx * self.sz

    def index(self, x: int, y: int, z: int) -> int:
        """Flat index of a cell, or -1 when it is outside the padded box."""
        px, pz, py = x - self.x0, z - self.z0, y - self.y0 + PAD_BELOW
        if 0 <= px < self.sx and 0 <= pz < self.sz and 0 <= py < self.sy + PAD_BELOW + PAD_ABOVE:
            return (py * self.sz + pz) * self.sx + px
        return -1

    def coords(self, i: int) -> tuple[int, int, int]:
        """World coordinates of a flat index."""
        py, rest = divmod(i, self.layer)
        pz, px = divmod(rest, self.sx)
        return px + self.x0, py - PAD_BELOW + self.y0, pz + self.z0

    def is_solid(self, x: int, y: int, z: int) -> bool:
        i = self.index(x, y, z)
        return i >= 0 and self.solid[i] == 1

    def standing(self, x: int, y: int, z: int) -> bool:
        """A bot stands in (x,y,z): solid below, feet and head cells free."""
        return (
            self.is_solid(x, y - 1, z)
            and not self.is_solid(x, y, z)
            and not self.is_solid(x, y + 1, z)
        )


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_MESSAGE, message)


def _int_triple(value: Any, what: str) -> tuple[int, int, int]:
    # `type(...) is int` rejects bools and floats: world coordinates are whole blocks.
    if type(value) is not list or len(value) != 3:
        raise _bad(f"{what} must be [x, y, z]")
    x, y, z = value
    if type(x) is not int or type(y) is not int or type(z) is not int:
        raise _bad(f"{what} must hold three integers")
    if not (abs(x) <= MAX_COORD and abs(y) <= MAX_COORD and abs(z) <= MAX_COORD):
        raise _bad(f"{what} is out of range")
    return x, y, z


def _empty(sx: int, sy: int, sz: int) -> bytearray:
    return bytearray(sx * sz * (sy + PAD_BELOW + PAD_ABOVE))


def _from_bitset(world: dict[str, Any]) -> Grid:
    x0, y0, z0 = _int_triple(world.get("origin"), "world.origin")
    size = world.get("size")
    sx, sy, sz = _int_triple(size, "world.size")
    if sx < 1 or sy < 1 or sz < 1:
        raise _bad("world.size must be positive")
    cells = sx * sy * sz
    if cells > MAX_CELLS:
        raise _bad(f"world volume {cells} is over the cap of {MAX_CELLS} cells")
    encoded = world.get("solid")
    if type(encoded) is not str:
        raise _bad("world.solid must be a base64 string or a list of cells")
    if len(encoded) > 4 * ((MAX_CELLS // 8 + 2) // 3) + 4:
        raise _bad("world.solid is too long")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("world.solid is not valid base64") from None
    if len(raw) != (cells + 7) // 8:
        raise _bad(f"world.solid has {len(raw)} bytes, the size needs {(cells + 7) // 8}")
    # Bits past `cells` in the last byte are padding and ignored.
    bits = _unpack_bits(raw)[:cells]
    layer = sx * sz
    solid = bytes(PAD_BELOW * layer) + bits + bytes(PAD_ABOVE * layer)
    return Grid(x0, y0, z0, sx, sy, sz, solid)


def _unpack_bits(raw: bytes) -> bytes:
    """One 0/1 byte per bit, least significant bit first."""
    try:
        import numpy as np  # where the compiled search is installed, numpy is too: 50x faster
    except ImportError:
        return b"".join(map(_UNPACK.__getitem__, raw))
    return np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little").tobytes()  # type: ignore[no-any-return]


def _from_cells(cells: list[Any]) -> Grid:
    if len(cells) > MAX_SOLID_LIST:
        raise _bad(f"world.solid lists more than {MAX_SOLID_LIST} cells")
    if not cells:
        return Grid(0, 0, 0, 1, 1, 1, _empty(1, 1, 1))
    triples = [_int_triple(cell, "a world.solid cell") for cell in cells]
    xs, ys, zs = zip(*triples, strict=True)
    x0, y0, z0 = min(xs), min(ys), min(zs)
    sx, sy, sz = max(xs) - x0 + 1, max(ys) - y0 + 1, max(zs) - z0 + 1
    if sx * sy * sz > MAX_CELLS:
        raise _bad(f"world.solid cells span more than {MAX_CELLS} cells")
    solid = _empty(sx, sy, sz)
    base = PAD_BELOW * sz
    for x, y, z in triples:
        solid[((y - y0) * sz + base + z - z0) * sx + x - x0] = 1
    return Grid(x0, y0, z0, sx, sy, sz, solid)


def decode_world(world: Any) -> Grid:
    """The grid a wire `world` describes; ``ProtocolError(BAD_MESSAGE)`` if it is malformed."""
    if type(world) is not dict:
        raise _bad("world must be a map")
    solid = world.get("solid")
    if type(solid) is list:
        return _from_cells(solid)  # origin/size, if sent, mean nothing here and are ignored
    if solid is None:
        raise _bad("world.solid is required")
    return _from_bitset(world)


def encode_bitset(origin: tuple[int, int, int], size: tuple[int, int, int], solid: Any) -> str:
    """Base64 bitset for a box, `solid(x, y, z) -> bool` per cell (for clients and tests)."""
    x0, y0, z0 = origin
    sx, sy, sz = size
    out = bytearray((sx * sy * sz + 7) // 8)
    i = 0
    for y in range(y0, y0 + sy):
        for z in range(z0, z0 + sz):
            for x in range(x0, x0 + sx):
                if solid(x, y, z):
                    out[i >> 3] |= 1 << (i & 7)
                i += 1
    return base64.b64encode(bytes(out)).decode("ascii")
