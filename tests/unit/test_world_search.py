"""A* on the shared model (§9) against the independent reference search of test_astar.

The reference reads the contract literally over a membership test: a cell is solid when its
section is known and its bit is set, or when its section is unknown (nobody walks into
unreported ground). The model side goes through everything a worker does: the arena, the index
lookup, the box, the dense grid.
"""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.workers.astar import find_path
from gateway.workers.tasks import parse_path, solve_path
from gateway.world.arena import SectionArena
from gateway.world.box import box_cells, search_box
from gateway.world.grid import model_grid
from gateway.world.model import WorldModel
from gateway.world.sections import (
    SECTION_BYTES,
    Blocks,
    Chunk,
    pack_key,
    section_of,
    set_bit,
)
from tests.unit.test_astar import BACKENDS, dijkstra, move_cost, standing

Cell = tuple[int, int, int]
Key = tuple[int, int, int]
DIM = 2


class ModelSolid:
    """`cell in solid` under the model's rules."""

    def __init__(self, sections: dict[Key, bytearray]) -> None:
        self.sections = sections

    def __contains__(self, cell: object) -> bool:
        x, y, z = cell  # type: ignore[misc]
        key, bit = section_of(x, y, z)
        bits = self.sections.get(key)
        return True if bits is None else bool((bits[bit >> 3] >> (bit & 7)) & 1)


@st.composite
def worlds(draw: st.DrawFn) -> dict[Key, bytearray]:
    """Some of a 2x2x2 block of sections, with hilly ground, holes and overhangs."""
    base = (draw(st.integers(-3, 3)), draw(st.integers(-2, 2)), draw(st.integers(-3, 3)))
    keys = [
        (base[0] + i, base[1] + j, base[2] + k) for i, j, k in itertools.product((0, 1), repeat=3)
    ]
    chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=8, unique=True))
    ground = draw(st.integers(2, 28))
    rough = draw(st.integers(0, 4))
    holes = draw(st.floats(0, 0.2))
    sections: dict[Key, bytearray] = {}
    rnd = random.Random(draw(st.integers(0, 2**32)))  # the bulk of the terrain, from a seed
    heights: dict[tuple[int, int], int] = {}
    for key in chosen:
        bits = bytearray(SECTION_BYTES)
        for lx, lz in itertools.product(range(16), repeat=2):
            x, z = key[0] * 16 + lx, key[2] * 16 + lz
            h = heights.setdefault((x, z), base[1] * 16 + ground + rnd.randint(0, rough))
            for ly in range(16):
                y = key[1] * 16 + ly
                solid = y < h or rnd.random() < holes / 4
                if y < h and rnd.random() < holes:
                    solid = False
                if solid:
                    set_bit(bits, section_of(x, y, z)[1], 1)
        sections[key] = bits
    return sections


def standing_cells(solid: ModelSolid) -> list[Cell]:
    out = []
    for key in sorted(solid.sections):
        for lx, ly, lz in itertools.product(range(16), repeat=3):
            x, y, z = key[0] * 16 + lx, key[1] * 16 + ly, key[2] * 16 + lz
            if standing(solid, x, y, z):  # type: ignore[arg-type]
                out.append((x, y, z))
    return out


def bounds_of(sections: dict[Key, bytearray]) -> tuple[int, int, int, int, int, int]:
    keys = list(sections)
    lo = [min(k[i] for k in keys) * 16 for i in range(3)]
    hi = [max(k[i] for k in keys) * 16 + 15 for i in range(3)]
    return lo[0], lo[1], lo[2], hi[0], hi[1], hi[2]


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sections=worlds(), data=st.data())
def test_model_paths_are_optimal_and_legal(
    backend: str, sections: dict[Key, bytearray], data: st.DataObject
) -> None:
    solid = ModelSolid(sections)
    stands = standing_cells(solid)
    anywhere = st.tuples(st.integers(-60, 60), st.integers(-40, 60), st.integers(-60, 60))
    pick = st.sampled_from(stands) if stands else anywhere
    start, goal = data.draw(pick), data.draw(pick)
    expected = dijkstra(solid, start, goal)  # type: ignore[arg-type]
    event("no path" if expected is None else "path")
    arena = SectionArena.create(len(sections))
    try:
        for key, bits in sections.items():
            arena.put(pack_key(DIM, key), bytes(bits))
        box = search_box(start, goal, bounds_of(sections), 1000, 1000)
        if box is None:
            assert expected is None
            return
        assert box_cells(box) <= 48 * 48 * 48
        result = find_path(model_grid(arena, DIM, box), start, goal, backend=backend)
    finally:
        arena.close()
    if expected is None:
        assert not result.ok and result.error == "no_path"
        return
    assert result.ok and result.cost == expected
    assert result.path[0] == start and result.path[-1] == goal
    total = 0
    for a, b in itertools.pairwise(result.path):
        step = move_cost(solid, a, b)  # type: ignore[arg-type]
        assert step is not None, f"illegal move {a} -> {b}"
        total += step
    assert total == result.cost


def test_unknown_ground_is_never_walked_into() -> None:
    """Two flat sections with an unreported one between them: no path until it is reported."""
    flat = bytearray(SECTION_BYTES)
    for lx, lz in itertools.product(range(16), repeat=2):
        set_bit(flat, section_of(lx, 0, lz)[1], 1)  # the floor at local y 0
    arena = SectionArena.create(4)
    try:
        arena.put(pack_key(DIM, (0, 0, 0)), bytes(flat))
        arena.put(pack_key(DIM, (2, 0, 0)), bytes(flat))
        start, goal = (1, 1, 1), (40, 1, 1)
        bounds = (0, 0, 0, 47, 15, 15)
        box = search_box(start, goal, bounds, 64, 32)
        assert box is not None
        assert find_path(model_grid(arena, DIM, box), start, goal).error == "no_path"
        arena.put(pack_key(DIM, (1, 0, 0)), bytes(flat))
        result = find_path(model_grid(arena, DIM, box), start, goal)
        assert result.ok and result.cost == 39
        other_dim = model_grid(arena, DIM + 1, box)
        assert find_path(other_dim, start, goal).error == "no_path"
    finally:
        arena.close()


def test_a_worker_never_searches_a_stale_copy_of_the_model() -> None:
    """Workers keep the grids of recent boxes; a change to the model (a section replaced, a
    single cell set) is seen by the next request for the same box."""
    flat = bytearray(SECTION_BYTES)
    for lx, lz in itertools.product(range(16), repeat=2):
        set_bit(flat, section_of(lx, 0, lz)[1], 1)
    model = WorldModel(8)
    try:
        for cx in (0, 1):
            model.accept_chunk(Chunk("overworld", (cx, 0, 0), bytes(flat)))
        job = parse_path({"start": [1, 1, 1], "goal": [30, 1, 1]})
        job = dataclasses.replace(job, model=model.path_ref("overworld", (1, 1, 1), (30, 1, 1)))
        assert solve_path(job, 5.0)["cost"] == 29
        assert solve_path(job, 5.0)["cost"] == 29  # the same box again: the kept grid
        wall = [(20, y, z, 1) for y in (1, 2, 3) for z in range(16)]
        model.accept_blocks(Blocks("overworld", wall))
        assert solve_path(job, 5.0)["error"] == "no_path"
        model.accept_chunk(Chunk("overworld", (1, 0, 0), bytes(flat)))  # the wall is gone
        assert solve_path(job, 5.0)["cost"] == 29
    finally:
        model.close()
