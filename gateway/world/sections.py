"""Sections of the shared world model (§9), sans I/O: wire checks, keys, bit ops.

A section is a 16x16x16 cube of blocks whose origin is a multiple of 16, held as its 4,096-bit
solid bitset (512 bytes) in the contract's bit order: bit ``(y·16 + z)·16 + x`` of the local
coordinates, byte ``i >> 3``, mask ``1 << (i & 7)``. Everything here is pure and unit-tested.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.protocol import (
    DEFAULT_DIM,
    MAX_COORD,
    MAX_DIM,
    MAX_Y,
    MIN_Y,
    ErrorCode,
    ProtocolError,
    clean_text,
)

SIDE = 16
SECTION_BITS = SIDE**3
SECTION_BYTES = SECTION_BITS // 8  # 512
MAX_CHANGES = 4096  # cells per `blocks` message (a 64 KiB frame holds about that many)
# Section coordinates (block >> 4) fit these offsets: |x|,|z| <= 30M -> |cx| < 2^21.
XZ_OFFSET = 1 << 21
Y_OFFSET = 1 << 8
MAX_DIMS = 255  # dimension ids 1..255 (8 bits of the key)

SectionKey = tuple[int, int, int]  # (cx, cy, cz): block origin // 16


@dataclass(frozen=True, slots=True)
class Chunk:
    """A checked `chunk` message: one whole section."""

    dim: str
    key: SectionKey
    solid: bytes  # SECTION_BYTES


@dataclass(frozen=True, slots=True)
class Blocks:
    """A checked `blocks` message: single-cell changes, (x, y, z, solid) in block coordinates."""

    dim: str
    changes: list[tuple[int, int, int, int]]


def _bad(message: str, ref: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_MESSAGE, message, ref)


def parse_dim(value: Any, ref: Any) -> str:
    if value is None:
        return DEFAULT_DIM
    if not clean_text(value, MAX_DIM):
        raise _bad(f"dim must be a string of 1-{MAX_DIM}", ref)
    return str(value)


def _in_world(x: int, y: int, z: int) -> bool:
    return abs(x) <= MAX_COORD and abs(z) <= MAX_COORD and MIN_Y <= y <= MAX_Y


def decode_bitset(value: Any, ref: Any) -> bytes:
    """512 bytes from msgpack bytes or a base64 string; `bad_message` for anything else."""
    if type(value) is bytes:
        raw = value
    elif type(value) is str:
        if len(value) > 4 * SECTION_BYTES:  # cheap bound before decoding
            raise _bad(f"solid must be {SECTION_BYTES} bytes", ref)
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("solid is not valid base64", ref) from None
    else:
        raise _bad("solid must be bytes (msgpack) or a base64 string (JSON)", ref)
    if len(raw) != SECTION_BYTES:
        raise _bad(f"solid has {len(raw)} bytes; a section's bitset has {SECTION_BYTES}", ref)
    return raw


def parse_chunk(msg: dict[str, Any], ref: Any = None) -> Chunk:
    """A `chunk` message checked: dim, origin (multiples of 16, in the world), 512-byte bitset."""
    dim = parse_dim(msg.get("dim"), ref)
    origin = msg.get("origin")
    if type(origin) is not list or len(origin) != 3 or any(type(v) is not int for v in origin):
        raise _bad("origin must be [x, y, z], three integers", ref)
    x0, y0, z0 = origin
    if x0 % SIDE or y0 % SIDE or z0 % SIDE:
        raise _bad("origin must be multiples of 16", ref)
    if not _in_world(x0, y0, z0) or not _in_world(x0 + SIDE - 1, y0 + SIDE - 1, z0 + SIDE - 1):
        raise _bad("origin is out of the world's range", ref)
    solid = decode_bitset(msg.get("solid"), ref)
    return Chunk(dim, (x0 >> 4, y0 >> 4, z0 >> 4), solid)


def parse_blocks(msg: dict[str, Any], ref: Any = None) -> Blocks:
    """A `blocks` message checked: every change is [x, y, z, 0|1] inside the world."""
    dim = parse_dim(msg.get("dim"), ref)
    changes = msg.get("changes")
    if type(changes) is not list or not changes:
        raise _bad("changes must be a non-empty list of [x, y, z, solid]", ref)
    if len(changes) > MAX_CHANGES:
        raise _bad(f"changes holds more than {MAX_CHANGES} cells", ref)
    out: list[tuple[int, int, int, int]] = []
    for change in changes:
        if type(change) is not list or len(change) != 4 or any(type(v) is not int for v in change):
            raise _bad("each change must be [x, y, z, solid], four integers", ref)
        x, y, z, solid = change
        if solid not in (0, 1):
            raise _bad("a change's solid must be 0 or 1", ref)
        if not _in_world(x, y, z):
            raise _bad("a change is out of the world's range", ref)
        out.append((x, y, z, solid))
    return Blocks(dim, out)


# -- keys and bits -------------------------------------------------------------------------------


def pack_key(dim_id: int, key: SectionKey) -> int:
    """One positive int64 for (dimension id 1..255, cx, cy, cz); never 0 (the empty slot)."""
    cx, cy, cz = key
    return (dim_id << 53) | ((cy + Y_OFFSET) << 44) | ((cz + XZ_OFFSET) << 22) | (cx + XZ_OFFSET)


def unpack_key(packed: int) -> tuple[int, SectionKey]:
    cx = (packed & 0x3F_FFFF) - XZ_OFFSET
    cz = ((packed >> 22) & 0x3F_FFFF) - XZ_OFFSET
    cy = ((packed >> 44) & 0x1FF) - Y_OFFSET
    return packed >> 53, (cx, cy, cz)


def section_of(x: int, y: int, z: int) -> tuple[SectionKey, int]:
    """The section holding a block, and the block's bit index inside it."""
    return (x >> 4, y >> 4, z >> 4), (((y & 15) << 4) | (z & 15)) << 4 | (x & 15)


def set_bit(bitset: bytearray | memoryview | np.ndarray, bit: int, solid: int) -> None:
    if solid:
        bitset[bit >> 3] |= 1 << (bit & 7)
    else:
        bitset[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF


def get_bit(bitset: bytes | bytearray | memoryview | np.ndarray, bit: int) -> int:
    return (int(bitset[bit >> 3]) >> (bit & 7)) & 1


def unpack(bitset: bytes | np.ndarray) -> np.ndarray:
    """The section as a (y, z, x) array of 0/1 bytes."""
    flat = np.unpackbits(np.frombuffer(bitset, np.uint8), bitorder="little")
    return flat.reshape(SIDE, SIDE, SIDE)


def pack(cells: np.ndarray) -> bytes:
    """Inverse of :func:`unpack`: a (y, z, x) 0/1 array back to 512 bytes."""
    return np.packbits(cells.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


NO_HEIGHT = -32768


def column_tops(bitset: bytes | np.ndarray, y0: int) -> np.ndarray:
    """(z, x) int16: the top solid block y of each column of the section, NO_HEIGHT if none."""
    cells = unpack(bitset)  # (y, z, x)
    any_solid = cells.any(axis=0)
    # Highest y index with a solid cell: flip y, argmax finds the first 1 from the top.
    top = SIDE - 1 - np.argmax(cells[::-1], axis=0)
    return np.where(any_solid, top + y0, NO_HEIGHT).astype(np.int16)
