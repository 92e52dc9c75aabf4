"""A* against an independent exhaustive reference, on generated terrains, both world encodings."""

from __future__ import annotations

import base64
import heapq
import itertools
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.protocol import ErrorCode, ProtocolError
from gateway.workers.astar import find_path, jit_available
from gateway.workers.world import MAX_CELLS, decode_world, encode_bitset

Cell = tuple[int, int, int]
BACKENDS = [
    "python",
    pytest.param(
        "jit", marks=pytest.mark.skipif(not jit_available(), reason="numba not installed")
    ),
]


# -- the reference: the contract's rules read literally, over a set of solid cells -------------


def standing(solid: set[Cell], x: int, y: int, z: int) -> bool:
    return (x, y - 1, z) in solid and (x, y, z) not in solid and (x, y + 1, z) not in solid


def moves(solid: set[Cell], cell: Cell) -> Iterator[tuple[Cell, int]]:
    x, y, z = cell
    for nx, nz in ((x + 1, z), (x - 1, z), (x, z + 1), (x, z - 1)):
        if standing(solid, nx, y, nz):
            yield (nx, y, nz), 1
        if standing(solid, nx, y + 1, nz) and (x, y + 2, z) not in solid:
            yield (nx, y + 1, nz), 2
        for d in (1, 2, 3):
            column_free = all((nx, k, nz) not in solid for k in range(y - d, y + 2))
            if standing(solid, nx, y - d, nz) and column_free:
                yield (nx, y - d, nz), 1 + d


def dijkstra(solid: set[Cell], start: Cell, goal: Cell) -> int | None:
    if not (standing(solid, *start) and standing(solid, *goal)):
        return None
    best = {start: 0}
    heap = [(0, start)]
    while heap:
        cost, cell = heapq.heappop(heap)
        if cell == goal:
            return cost
        if cost > best[cell]:
            continue
        for nxt, step in moves(solid, cell):
            if cost + step < best.get(nxt, 1 << 60):
                best[nxt] = cost + step
                heapq.heappush(heap, (cost + step, nxt))
    return None


def move_cost(solid: set[Cell], a: Cell, b: Cell) -> int | None:
    return next((c for nxt, c in moves(solid, a) if nxt == b), None)


# -- generated terrains ----------------------------------------------------------------------


@st.composite
def terrains(draw: st.DrawFn) -> tuple[Cell, Cell, set[Cell], Cell, Cell]:
    sx, sy, sz = draw(st.integers(1, 7)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    origin = (draw(st.integers(-50, 50)), draw(st.integers(-60, 60)), draw(st.integers(-50, 50)))
    density = draw(st.sampled_from([0.2, 0.4, 0.6]))
    bits = draw(st.lists(st.floats(0, 1), min_size=sx * sy * sz, max_size=sx * sy * sz))
    cells = itertools.product(range(sy), range(sz), range(sx))
    solid = {
        (origin[0] + x, origin[1] + y, origin[2] + z)
        for (y, z, x), b in zip(cells, bits, strict=True)
        if b < density
    }
    stands = sorted(
        (x, y, z)
        for x in range(origin[0], origin[0] + sx)
        for z in range(origin[2], origin[2] + sz)
        for y in range(origin[1], origin[1] + sy + 1)
        if standing(solid, x, y, z)
    )
    anywhere = st.tuples(
        st.integers(origin[0] - 1, origin[0] + sx),
        st.integers(origin[1] - 1, origin[1] + sy + 1),
        st.integers(origin[2] - 1, origin[2] + sz),
    )
    if len(stands) >= 2 and draw(st.integers(0, 9)) < 8:
        # Mostly two distinct standing cells: the interesting case.
        i, j = draw(st.lists(st.integers(0, len(stands) - 1), min_size=2, max_size=2, unique=True))
        return origin, (sx, sy, sz), solid, stands[i], stands[j]
    pick = st.sampled_from(stands) | anywhere if stands else anywhere
    return origin, (sx, sy, sz), solid, draw(pick), draw(pick)


def both_encodings(origin: Cell, size: Cell, solid: set[Cell]) -> list[dict[str, object]]:
    bitset = encode_bitset(origin, size, lambda x, y, z: (x, y, z) in solid)
    return [
        {"origin": list(origin), "size": list(size), "solid": bitset},
        {"solid": [list(c) for c in sorted(solid)]},
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(terrain=terrains())
def test_optimal_and_legal_against_reference(
    backend: str, terrain: tuple[Cell, Cell, set[Cell], Cell, Cell]
) -> None:
    origin, size, solid, start, goal = terrain
    expected = dijkstra(solid, start, goal)
    event("no path" if expected is None else "path" if expected == 0 else "path of length > 0")
    for world in both_encodings(origin, size, solid):
        result = find_path(decode_world(world), start, goal, backend=backend)
        if expected is None:
            assert not result.ok
            assert result.error == "no_path"
            continue
        assert result.ok, result
        assert result.cost == expected
        assert result.path[0] == start
        assert result.path[-1] == goal
        total = 0
        for a, b in itertools.pairwise(result.path):
            step = move_cost(solid, a, b)
            assert step is not None, f"illegal move {a} -> {b}"
            total += step
        assert total == result.cost


def staircase() -> tuple[set[Cell], Cell, Cell]:
    """Floor y=0 for x 0-5 with a 1-block step at x=3-5, then a pit floor at y=-2 for x 6-9."""
    solid = {(x, 0, z) for x in range(6) for z in range(3)}
    solid |= {(x, 1, z) for x in range(3, 6) for z in range(3)}
    solid |= {(x, -2, z) for x in range(6, 10) for z in range(3)}
    return solid, (0, 1, 1), (9, -1, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_up_and_drop_rules(backend: str) -> None:
    solid, start, goal = staircase()
    result = find_path(
        decode_world({"solid": [list(c) for c in solid]}), start, goal, backend=backend
    )
    # walk 2, step up (2), walk 2, drop of 3 from y=2 to y=-1 (4), walk 3.
    assert result.cost == 13 == dijkstra(solid, start, goal)
    # The drop needs the landing column free up to the bot's head height (y+1 = 3).
    blocked = solid | {(6, 3, z) for z in range(3)}
    assert dijkstra(blocked, start, goal) is None
    world = {"solid": [list(c) for c in blocked]}
    assert find_path(decode_world(world), start, goal, backend=backend).error == "no_path"


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_up_needs_room_above_head(backend: str) -> None:
    floor = {(x, 0, 0) for x in range(2)} | {(1, 1, 0)}
    grid = decode_world({"solid": [list(c) for c in floor]})
    assert find_path(grid, (0, 1, 0), (1, 2, 0), backend=backend).cost == 2
    ceiling = floor | {(0, 3, 0)}
    grid = decode_world({"solid": [list(c) for c in ceiling]})
    assert find_path(grid, (0, 1, 0), (1, 2, 0), backend=backend).error == "no_path"


@pytest.mark.parametrize("backend", BACKENDS)
def test_drop_column_cells(backend: str) -> None:
    # From (0,4,0) into column x=1 landing on (1,0,0): a drop of 3 needs (1,1..5,0) free.
    base = {(0, 3, 0), (1, 0, 0)}
    grid = decode_world({"solid": [list(c) for c in base]})
    assert find_path(grid, (0, 4, 0), (1, 1, 0), backend=backend).cost == 4
    for k in range(1, 6):
        grid = decode_world({"solid": [list(c) for c in base | {(1, k, 0)}]})
        result = find_path(grid, (0, 4, 0), (1, 1, 0), backend=backend)
        assert result.error == "no_path", k
    # A drop of 4 is not a move.
    grid = decode_world({"solid": [[0, 4, 0], [1, 0, 0]]})
    assert find_path(grid, (0, 5, 0), (1, 1, 0), backend=backend).error == "no_path"


def test_start_or_goal_not_standing_is_no_path() -> None:
    grid = decode_world({"solid": [[0, 0, 0], [1, 0, 0]]})
    assert find_path(grid, (0, 2, 0), (1, 1, 0)).error == "no_path"
    assert find_path(grid, (0, 1, 0), (5, 1, 5)).error == "no_path"
    assert find_path(grid, (0, 1, 0), (0, 1, 0)).cost == 0


def flat(n: int) -> object:
    return decode_world({"origin": [0, 0, 0], "size": [n, 1, n], "solid": _all_ones(n * n)})


def _all_ones(cells: int) -> str:
    return base64.b64encode(b"\xff" * ((cells + 7) // 8)).decode()


@pytest.mark.parametrize("backend", BACKENDS)
def test_budget_gives_too_large(backend: str) -> None:
    grid = flat(40)
    ok = find_path(grid, (0, 1, 0), (39, 1, 39), backend=backend)  # type: ignore[arg-type]
    assert ok.ok and ok.cost == 78
    # Even the straightest search needs 79 expansions here.
    result = find_path(grid, (0, 1, 0), (39, 1, 39), max_nodes=50, backend=backend)  # type: ignore[arg-type]
    assert result.error == "too_large"
    assert result.expanded == 50


@pytest.mark.parametrize("backend", BACKENDS)
def test_deadline_gives_timeout(backend: str) -> None:
    ticks = itertools.count()

    def clock() -> float:
        return float(next(ticks))  # every reading is one second later

    grid = flat(40)
    result = find_path(grid, (0, 1, 0), (39, 1, 39), timeout_s=0.5, clock=clock, backend=backend)  # type: ignore[arg-type]
    assert result.error == "timeout"


@pytest.mark.parametrize(
    "world",
    [
        "not a map",
        {},
        {"solid": 5},
        {"solid": [[0, 0]]},
        {"solid": [[0, 0, 0.5]]},
        {"solid": [[0, True, 0]]},
        {"solid": [[0, 0, 10**9]]},
        {"solid": [[0, 0, 0], [5000, 0, 5000]]},  # spans over the cell cap
        {"origin": [0, 0, 0], "size": [2, 2, 2], "solid": "!!!notbase64"},
        {"origin": [0, 0, 0], "size": [2, 2, 2], "solid": base64.b64encode(b"\0\0").decode()},
        {"origin": [0, 0, 0], "size": [2, 2, 2]},
        {"origin": [0, 0], "size": [2, 2, 2], "solid": "AA=="},
        {"origin": [0, 0, 0], "size": [0, 2, 2], "solid": ""},
        {"origin": [0, 0, 0], "size": [2, -1, 2], "solid": "AA=="},
        {"origin": [0.5, 0, 0], "size": [2, 2, 2], "solid": "AA=="},
        {"origin": [0, 0, 0], "size": [1024, 1024, 1024], "solid": "AA=="},
    ],
)
def test_malformed_worlds_are_bad_message(world: object) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_world(world)
    assert err.value.code is ErrorCode.BAD_MESSAGE


def test_bitset_bit_order_and_outside_is_air() -> None:
    # 3x1x2 volume at origin (10, 5, 20); bit i = ((y-y0)*sz + (z-z0))*sx + (x-x0).
    # Set bit 4: z=1, x=1 → cell (11, 5, 21).
    raw = bytes([1 << 4])
    grid = decode_world(
        {"origin": [10, 5, 20], "size": [3, 1, 2], "solid": base64.b64encode(raw).decode()}
    )
    assert grid.is_solid(11, 5, 21)
    assert sum(grid.is_solid(x, 5, z) for x in range(10, 13) for z in range(20, 22)) == 1
    assert not grid.is_solid(11, 4, 21) and not grid.is_solid(11, 6, 21)
    assert grid.standing(11, 6, 21)
    assert MAX_CELLS == 16 * 1024 * 1024


@pytest.mark.skipif(not jit_available(), reason="numba not installed")
def test_after_warm_up_no_kind_of_world_waits_for_a_compile() -> None:
    """A worker's warm-up compiles the kernel for every kind of world, so no first request
    stalls for a compile: a fresh process, warmed up, then searched with both kinds."""
    import subprocess
    import sys

    script = """
from gateway.workers.astar import _compiled_kernel, find_path
from gateway.workers.tasks import warm_up
from gateway.workers.world import decode_world, encode_bitset
warm_up()
warmed = len(_compiled_kernel().signatures)
bitset = encode_bitset((0, 0, 0), (4, 2, 4), lambda x, y, z: y == 0)
worlds = [{"origin": [0, 0, 0], "size": [4, 2, 4], "solid": bitset},
          {"solid": [[x, 0, z] for x in range(4) for z in range(4)]}]
for world in worlds:
    assert find_path(decode_world(world), (0, 1, 0), (3, 1, 3), backend="jit").ok
print(warmed, len(_compiled_kernel().signatures))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    warmed, after = map(int, out.stdout.split())
    assert after == warmed
