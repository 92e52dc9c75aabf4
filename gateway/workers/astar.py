"""A* over standing cells (§9). Pure: no I/O; the clock is injected.

Movement rules, from a standing cell (x, y, z) to a horizontal neighbour column (nx, nz):

- walk to (nx, y, nz), cost 1: the target is a standing cell.
- step up to (nx, y+1, nz), cost 2: the target is standing ((nx, y, nz) solid, (nx, y+1, nz)
  and (nx, y+2, nz) free) and the cell above the bot's head, (x, y+2, z), is free.
- drop to (nx, y-d, nz) for d in 1..3, cost 1 + d: every cell of the column from the bot's head
  height down to the landing, (nx, y+1, nz) … (nx, y-d, nz), is free and (nx, y-d-1, nz) is
  solid. The bot falls to the first solid block, so each column offers at most one move.

Every move costs 1 + |Δy| and changes |Δx| + |Δz| by exactly 1, so
``h = max(|Δx| + |Δz|, moves needed vertically) + |Δy|`` (a rise needs one move per block, a
fall one per 3 blocks) is admissible and consistent: the first time the goal is popped its cost
is optimal. Ties on f go to the larger g (the node nearer the goal), which keeps the search on a
straight line across flat ground instead of flooding the whole f-plateau.
"""

from __future__ import annotations

import functools
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.workers.world import Grid

Cell = tuple[int, int, int]

DEFAULT_MAX_NODES = 100_000
_CLOCK_EVERY = 1024  # read the clock once per this many expansions (it costs as much as one)


@dataclass(frozen=True, slots=True)
class PathResult:
    """Outcome of one search. `error` is None, "no_path", "too_large" or "timeout"."""

    ok: bool
    path: list[Cell] = field(default_factory=list)
    cost: int = 0
    expanded: int = 0
    error: str | None = None


def _no_path(expanded: int = 0) -> PathResult:
    return PathResult(False, expanded=expanded, error="no_path")


def find_path(
    grid: Grid,
    start: Cell,
    goal: Cell,
    max_nodes: int = DEFAULT_MAX_NODES,
    timeout_s: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
    backend: str = "auto",
) -> PathResult:
    """Least-cost path from `start` to `goal`, both standing cells, under the movement rules.

    Fails with "too_large" after `max_nodes` expansions and with "timeout" once `clock()` has
    passed `timeout_s` seconds after the call (checked at the start and every so many
    expansions). `backend` is "python", "jit" (numba; ~20x faster) or "auto" (jit if numba
    imports). Both give the same cost; among equally cheap paths they may pick different ones.
    """
    if not (grid.standing(*start) and grid.standing(*goal)):
        return _no_path()
    s, t = grid.index(*start), grid.index(*goal)
    if s == t:
        return PathResult(True, [start], 0, 0)
    deadline = None if timeout_s is None else clock() + timeout_s
    if backend == "jit" or (backend == "auto" and jit_available()):
        return _search_jit(grid, s, t, max_nodes, deadline, clock)
    if backend not in ("python", "auto"):
        raise ValueError(f"unknown backend {backend!r}")
    return _search_python(grid, s, t, max_nodes, deadline, clock)


@functools.cache
def jit_available() -> bool:
    """Whether the numba backend can be used in this process (imports numba on first call)."""
    try:
        import numba  # noqa: F401
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def _search_python(
    grid: Grid,
    s: int,
    t: int,
    max_nodes: int,
    deadline: float | None,
    clock: Callable[[], float],
) -> PathResult:

    solid = grid.solid
    sx, sz = grid.sx, grid.sz
    dy = grid.layer
    dy2, dy3, dy4 = 2 * dy, 3 * dy, 4 * dy
    # Padded coordinates: x and z as in the array; the goal's too.
    gyl, rest = divmod(t, dy)
    gz, gx = divmod(rest, sx)

    # Directions by which edge of the box a cell touches (bit 1: x=0, 2: x=max, 4: z=0,
    # 8: z=max), so moves never wrap into the next row. (delta index, dx, dz).
    dirs_by_edge = []
    for mask in range(16):
        dirs = []
        if not mask & 1:
            dirs.append((-1, -1, 0))
        if not mask & 2:
            dirs.append((1, 1, 0))
        if not mask & 4:
            dirs.append((-sx, 0, -1))
        if not mask & 8:
            dirs.append((sx, 0, 1))
        dirs_by_edge.append(tuple(dirs))
    xmax, zmax = sx - 1, sz - 1

    # Heap keys are single ints (f, then larger g first, then index) — int comparison is much
    # cheaper than tuple comparison. g is stored as gcap - g so larger g sorts first.
    ibits = len(solid).bit_length()
    imask = (1 << ibits) - 1
    gbits = 40
    gcap = (1 << gbits) - 1
    gshift = ibits
    fshift = ibits + gbits

    def h(x: int, yl: int, z: int) -> int:
        ddx = x - gx if x > gx else gx - x
        ddz = z - gz if z > gz else gz - z
        hd = ddx + ddz
        rise = gyl - yl
        if rise >= 0:
            vm = rise
        else:
            rise = -rise
            vm = (rise + 2) // 3
        return (hd if hd > vm else vm) + rise

    s_layer, s_rest = divmod(s, dy)
    sz0, sx0 = divmod(s_rest, sx)
    heap = [(h(sx0, s_layer, sz0) << fshift) | (gcap << gshift) | s]
    g_of: dict[int, int] = {s: 0}
    parent: dict[int, int] = {s: -1}
    closed = bytearray(len(solid))
    pop, push = heapq.heappop, heapq.heappush
    expanded = 0

    while heap:
        key = pop(heap)
        i = key & imask
        if closed[i]:
            continue  # a stale entry: a cheaper one for the same cell was popped earlier
        if i == t:
            path = []
            while i >= 0:
                path.append(grid.coords(i))
                i = parent[i]
            path.reverse()
            return PathResult(True, path, g_of[t], expanded)
        if expanded >= max_nodes:
            return PathResult(False, expanded=expanded, error="too_large")
        if deadline is not None and not expanded % _CLOCK_EVERY and clock() > deadline:
            return PathResult(False, expanded=expanded, error="timeout")
        closed[i] = 1
        expanded += 1
        g = gcap - ((key >> gshift) & gcap)
        yl, rest = divmod(i, dy)
        z, x = divmod(rest, sx)
        edge = (x == 0) | ((x == xmax) << 1) | ((z == 0) << 2) | ((z == zmax) << 3)
        head_free = not solid[i + dy2]
        for d, ddx, ddz in dirs_by_edge[edge]:
            n = i + d
            if solid[n]:
                # Step up: target's feet and head free, and room above the bot's own head.
                if head_free and not solid[n + dy] and not solid[n + dy2]:
                    m, c, my = n + dy, 2, yl + 1
                else:
                    continue
            elif solid[n + dy]:
                continue  # the head cell of the column is blocked: no walk, no drop
            elif solid[n - dy]:
                m, c, my = n, 1, yl
            elif solid[n - dy2]:
                m, c, my = n - dy, 2, yl - 1
            elif solid[n - dy3]:
                m, c, my = n - dy2, 3, yl - 2
            elif solid[n - dy4]:
                m, c, my = n - dy3, 4, yl - 3
            else:
                continue  # a fall of more than 3 blocks
            if closed[m]:
                continue
            ng = g + c
            old = g_of.get(m)
            if old is not None and old <= ng:
                continue
            g_of[m] = ng
            parent[m] = i
            push(
                heap,
                ((ng + h(x + ddx, my, z + ddz)) << fshift) | ((gcap - ng) << gshift) | m,
            )
    return _no_path(expanded)


# -- the compiled backend ------------------------------------------------------------------------
# The same search, written for numba: flat numpy arrays, a hand-rolled binary heap of int64 keys
# (f << 32 | gmax - g: ties to the larger g) with a parallel array of cell indices. It runs in
# chunks of expansions so that the Python wrapper can read the clock between them.

_GSHIFT = 32
_GMAX = (1 << 31) - 1
_CHUNK = 1 << 15  # expansions between clock reads: ~1 ms of work
_RUNNING, _FOUND, _EXHAUSTED, _BUDGET = 0, 1, 2, 3


def _kernel(  # one hot loop, kept flat so numba compiles it well
    solid,
    sx,
    sz,
    t,
    gx,
    gyl,
    gz,
    stamp,
    g,
    parent,
    hkey,
    hnode,
    hsize,
    expanded,
    budget,
    stop_at,
    gen,
):  # type: ignore[no-untyped-def]
    # stamp[i] == gen: open (g/parent valid); gen + 1: closed; anything else: unseen. A new
    # generation per search means the arrays are reused without clearing them.
    closed = gen + 1
    dy = sx * sz
    xmax = sx - 1
    zmax = sz - 1
    while hsize > 0:
        key = hkey[0]
        i = hnode[0]
        hsize -= 1
        last_key = hkey[hsize]
        last_node = hnode[hsize]
        j = 0
        while True:  # sift the last entry down from the root
            c = 2 * j + 1
            if c >= hsize:
                break
            if c + 1 < hsize and hkey[c + 1] < hkey[c]:
                c += 1
            if hkey[c] >= last_key:
                break
            hkey[j] = hkey[c]
            hnode[j] = hnode[c]
            j = c
        if hsize > 0:
            hkey[j] = last_key
            hnode[j] = last_node
        if stamp[i] == closed:
            continue
        if i == t:
            return _FOUND, hsize, expanded
        if expanded >= budget:
            return _BUDGET, hsize, expanded
        if expanded >= stop_at:
            # Put the entry back (sift up) and yield to the caller's clock check.
            j = hsize
            while j > 0:
                p = (j - 1) >> 1
                if hkey[p] <= key:
                    break
                hkey[j] = hkey[p]
                hnode[j] = hnode[p]
                j = p
            hkey[j] = key
            hnode[j] = i
            return _RUNNING, hsize + 1, expanded
        stamp[i] = closed
        expanded += 1
        gi = g[i]
        yl = i // dy
        rest = i - yl * dy
        z = rest // sx
        x = rest - z * sx
        head_free = solid[i + 2 * dy] == 0
        for k in range(4):
            if k == 0:
                if x == 0:
                    continue
                n = i - 1
                nx = x - 1
                nz = z
            elif k == 1:
                if x == xmax:
                    continue
                n = i + 1
                nx = x + 1
                nz = z
            elif k == 2:
                if z == 0:
                    continue
                n = i - sx
                nx = x
                nz = z - 1
            else:
                if z == zmax:
                    continue
                n = i + sx
                nx = x
                nz = z + 1
            if solid[n]:
                if head_free and solid[n + dy] == 0 and solid[n + 2 * dy] == 0:
                    m = n + dy
                    c = 2
                    my = yl + 1
                else:
                    continue
            elif solid[n + dy]:
                continue
            elif solid[n - dy]:
                m = n
                c = 1
                my = yl
            elif solid[n - 2 * dy]:
                m = n - dy
                c = 2
                my = yl - 1
            elif solid[n - 3 * dy]:
                m = n - 2 * dy
                c = 3
                my = yl - 2
            elif solid[n - 4 * dy]:
                m = n - 3 * dy
                c = 4
                my = yl - 3
            else:
                continue
            st = stamp[m]
            if st == closed:
                continue
            ng = gi + c
            if st == gen and g[m] <= ng:
                continue
            stamp[m] = gen
            g[m] = ng
            parent[m] = i
            hd = abs(nx - gx) + abs(nz - gz)
            rise = gyl - my
            if rise >= 0:
                vm = rise
            else:
                rise = -rise
                vm = (rise + 2) // 3
            key = ((ng + max(hd, vm) + rise) << 32) | (2147483647 - ng)
            j = hsize  # sift up
            while j > 0:
                p = (j - 1) >> 1
                if hkey[p] <= key:
                    break
                hkey[j] = hkey[p]
                hnode[j] = hnode[p]
                j = p
            hkey[j] = key
            hnode[j] = m
            hsize += 1
    return _EXHAUSTED, hsize, expanded


@functools.cache
def _compiled_kernel() -> Callable[..., tuple[int, int, int]]:
    import numba  # only worker processes pay for numba

    # cache=True keeps the machine code on disk (__pycache__): later processes load it in ms.
    return numba.njit(cache=True, nogil=True)(_kernel)  # type: ignore[no-any-return]


class _Workspace:
    """Search arrays for grids of one size, reused across searches in a process."""

    def __init__(self, cells: int, heap: int) -> None:
        import numpy as np

        self.stamp = np.zeros(cells, np.uint32)
        self.g = np.empty(cells, np.int32)
        self.parent = np.empty(cells, np.int32)
        self.hkey = np.empty(heap, np.int64)
        self.hnode = np.empty(heap, np.int32)
        self.gen = 0

    def next_generation(self) -> int:
        if self.gen >= 0xFFFF_FFF0:
            self.stamp[:] = 0
            self.gen = 0
        self.gen += 2
        return self.gen


_WORKSPACE: list[_Workspace] = []  # this process's one workspace, grown when a grid needs more


def _workspace(cells: int, heap: int) -> _Workspace:
    # Fresh multi-megabyte arrays per search cost more in page faults than the search itself,
    # and grids of every size (the boxes of requests on the world model) differ from one search
    # to the next: one workspace at least as large as the largest grid yet serves them all (the
    # generation stamps make leftovers of other grids harmless). Grown by 1/8 more than asked.
    ws = _WORKSPACE[0] if _WORKSPACE else None
    if ws is None or ws.stamp.size < cells or ws.hkey.size < heap:
        size = max(cells, 0 if ws is None else ws.stamp.size)
        hsize = max(heap, 0 if ws is None else ws.hkey.size)
        _WORKSPACE[:] = [_Workspace(size + size // 8, hsize + hsize // 8)]
    return _WORKSPACE[0]


def _search_jit(
    grid: Grid,
    s: int,
    t: int,
    max_nodes: int,
    deadline: float | None,
    clock: Callable[[], float],
) -> PathResult:
    import numpy as np

    kernel = _compiled_kernel()
    solid = np.frombuffer(grid.solid, dtype=np.uint8)
    cells = solid.size
    # Each expansion pushes at most 4 entries; the heap never holds more than that.
    heap = min(4 * max_nodes + 8, 4 * cells + 8)
    ws = _workspace(cells, max(heap, 1 << 16))
    gen = ws.next_generation()
    ws.stamp[s] = gen
    ws.g[s] = 0
    ws.parent[s] = -1
    ws.hkey[0] = 0
    ws.hnode[0] = s
    dy = grid.layer
    gyl, rest = divmod(t, dy)
    gz, gx = divmod(rest, grid.sx)
    hsize, expanded = 1, 0
    while True:
        if deadline is not None and clock() > deadline:
            return PathResult(False, expanded=expanded, error="timeout")
        status, hsize, expanded = kernel(
            solid, grid.sx, grid.sz, t, gx, gyl, gz, ws.stamp, ws.g, ws.parent,
            ws.hkey, ws.hnode, hsize, expanded, max_nodes, expanded + _CHUNK, gen,
        )  # fmt: skip
        if status != _RUNNING:
            break
    if status == _BUDGET:
        return PathResult(False, expanded=int(expanded), error="too_large")
    if status == _EXHAUSTED:
        return _no_path(int(expanded))
    path = []
    parent = ws.parent
    i = t
    while i >= 0:
        path.append(grid.coords(i))
        i = int(parent[i])
    path.reverse()
    return PathResult(True, path, int(ws.g[t]), int(expanded))
