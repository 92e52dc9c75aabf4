"""The world model's pure core: wire checks for `chunk`/`blocks`, keys, bits, the arena index."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocol import MAX_COORD, ErrorCode, ProtocolError
from gateway.workers.world import encode_bitset
from gateway.world.arena import SectionArena
from gateway.world.sections import (
    MAX_CHANGES,
    NO_HEIGHT,
    SECTION_BYTES,
    column_tops,
    get_bit,
    pack,
    pack_key,
    parse_blocks,
    parse_chunk,
    section_of,
    set_bit,
    unpack,
    unpack_key,
)

ZERO = bytes(SECTION_BYTES)


def chunk(**fields: object) -> dict[str, object]:
    return {"type": "chunk", "dim": "overworld", "origin": [16, -64, -32], "solid": ZERO, **fields}


def test_chunk_takes_bytes_or_base64() -> None:
    raw = bytes(range(256)) * 2
    for solid in (raw, base64.b64encode(raw).decode()):
        parsed = parse_chunk(chunk(solid=solid))
        assert parsed.key == (1, -4, -2) and parsed.solid == raw and parsed.dim == "overworld"
    assert parse_chunk({"origin": [0, 0, 0], "solid": ZERO}).dim == "overworld"


@pytest.mark.parametrize(
    "fields",
    [
        {"origin": [1, 0, 0]},
        {"origin": [0, 8, 0]},
        {"origin": [0, 0]},
        {"origin": [0.0, 0, 0]},
        {"origin": [True, 0, 0]},
        {"origin": None},
        {"origin": [(MAX_COORD // 16) * 16, 0, 0]},  # its far edge is past the world
        {"origin": [0, 2048, 0]},
        {"solid": ZERO[:-1]},
        {"solid": ZERO + b"\0"},
        {"solid": base64.b64encode(ZERO[:-1]).decode()},
        {"solid": "not base64!"},
        {"solid": [0] * 512},
        {"solid": None},
        {"dim": ""},
        {"dim": "x" * 65},
        {"dim": 3},
    ],
)
def test_bad_chunks_are_bad_message(fields: dict[str, object]) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_chunk(chunk(**fields), ref=7)
    assert err.value.code is ErrorCode.BAD_MESSAGE and err.value.ref == 7


def test_chunk_at_the_world_edges_is_fine() -> None:
    edge = (MAX_COORD // 16) * 16 - 16
    assert parse_chunk(chunk(origin=[edge, 2032, -edge])).key == (edge >> 4, 127, -edge >> 4)
    assert parse_chunk(chunk(origin=[0, -2048, 0])).key == (0, -128, 0)


def test_blocks_limits() -> None:
    ok = parse_blocks({"changes": [[0, 0, 0, 1]] * MAX_CHANGES})
    assert len(ok.changes) == MAX_CHANGES
    for changes in (
        [[0, 0, 0, 1]] * (MAX_CHANGES + 1),
        [],
        None,
        [[0, 0, 0, 2]],
        [[0, 0, 0, True]],
        [[0, 0, 0]],
        [[0, 0.5, 0, 1]],
        [[0, 4000, 0, 1]],
    ):
        with pytest.raises(ProtocolError) as err:
            parse_blocks({"changes": changes})
        assert err.value.code is ErrorCode.BAD_MESSAGE


coords = st.tuples(
    st.integers(-MAX_COORD >> 4, MAX_COORD >> 4),
    st.integers(-128, 127),
    st.integers(-MAX_COORD >> 4, MAX_COORD >> 4),
)


@given(dim=st.integers(1, 255), key=coords)
def test_keys_round_trip_and_are_positive(dim: int, key: tuple[int, int, int]) -> None:
    packed = pack_key(dim, key)
    assert 0 < packed < 2**63
    assert unpack_key(packed) == (dim, key)


@given(x=st.integers(-1000, 1000), y=st.integers(-64, 319), z=st.integers(-1000, 1000))
def test_bit_order_is_the_contracts(x: int, y: int, z: int) -> None:
    key, bit = section_of(x, y, z)
    origin = (key[0] * 16, key[1] * 16, key[2] * 16)
    wire = base64.b64decode(encode_bitset(origin, (16, 16, 16), lambda *c: c == (x, y, z)))
    bits = bytearray(SECTION_BYTES)
    set_bit(bits, bit, 1)
    assert bytes(bits) == wire and get_bit(bits, bit) == 1
    cells = unpack(bytes(bits))
    assert cells[y - origin[1], z - origin[2], x - origin[0]] == 1 and cells.sum() == 1
    assert pack(cells) == wire
    set_bit(bits, bit, 0)
    assert bytes(bits) == ZERO


@settings(max_examples=50)
@given(raw=st.binary(min_size=SECTION_BYTES, max_size=SECTION_BYTES), y0=st.integers(-8, 8))
def test_column_tops_are_the_highest_solid_cell(raw: bytes, y0: int) -> None:
    tops = column_tops(raw, y0 * 16)
    cells = unpack(raw)
    for z in range(16):
        for x in range(16):
            ys = [y for y in range(16) if cells[y, z, x]]
            assert tops[z, x] == (y0 * 16 + max(ys) if ys else NO_HEIGHT)


@settings(max_examples=30)
@given(keys=st.lists(st.tuples(st.integers(1, 3), coords), min_size=1, max_size=200, unique=True))
def test_arena_index_finds_every_section_and_no_other(
    keys: list[tuple[int, tuple[int, int, int]]],
) -> None:
    arena = SectionArena.create(len(keys))
    reader = SectionArena.attach(arena.path)  # mapped before the writes: sees them anyway
    try:
        packed = [pack_key(d, k) for d, k in keys]
        for i, p in enumerate(packed):
            assert arena.put(p, bytes([i % 256]) * SECTION_BYTES) == i
        assert arena.put(pack_key(4, (0, 0, 0)), ZERO) is None  # full: refused, not overwritten
        slots = reader.lookup(np.array([*packed, pack_key(4, (0, 0, 0))], np.int64))
        assert list(slots[:-1]) == list(range(len(keys))) and slots[-1] == -1
        for i in range(len(keys)):
            assert reader.data[slots[i]][0] == i % 256
        arena.put(packed[0], b"\xff" * SECTION_BYTES)  # replaced in place, same slot
        assert reader.data[reader.lookup(np.array(packed[:1]))[0]][0] == 255
    finally:
        reader.close()
        arena.close()
