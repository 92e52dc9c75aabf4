"""From the shared model to the search's dense grid, inside a worker. Pure but for the arena.

A path request without a world names a box (chosen on the event loop from the start, the goal
and the dimension's known bounds, see :func:`search_box`); the worker reads the box's sections
from the arena it has mapped and unpacks them into the same :class:`Grid` the A* searches for
requests with a world. Unknown sections are solid (§9): nobody walks into unreported ground.

Padding (the A* reads up to 4 cells below and 2 above a standing cell without bounds checks):
air below the box, as for wire worlds, and solid above it, so the top of the box is never taken
for open sky. Both only remove moves at the box's edges, never add any: every path found is
legal in the model. The box reaches one block past the known bounds in y, so a bot standing on
the lowest reported layer stands on (unknown, solid) ground, as the rules say.
"""

from __future__ import annotations

import numpy as np

from gateway.workers.world import PAD_ABOVE, PAD_BELOW, Grid
from gateway.world.arena import SectionArena
from gateway.world.box import Box
from gateway.world.sections import SIDE, XZ_OFFSET, Y_OFFSET


def model_grid(arena: SectionArena, dim_id: int, box: Box) -> Grid:
    """The dense grid of `box` read from the arena (unknown sections solid)."""
    x0, y0, z0, x1, y1, z1 = box
    cx0, cy0, cz0 = x0 >> 4, y0 >> 4, z0 >> 4
    nx, ny, nz = (x1 >> 4) - cx0 + 1, (y1 >> 4) - cy0 + 1, (z1 >> 4) - cz0 + 1
    iy, iz, ix = np.meshgrid(np.arange(ny), np.arange(nz), np.arange(nx), indexing="ij")
    iy, iz, ix = iy.ravel(), iz.ravel(), ix.ravel()
    keys = (
        (np.int64(dim_id) << 53)
        | ((iy + cy0 + Y_OFFSET).astype(np.int64) << 44)
        | ((iz + cz0 + XZ_OFFSET).astype(np.int64) << 22)
        | (ix + cx0 + XZ_OFFSET).astype(np.int64)
    )
    slots = arena.lookup(keys)
    full = np.ones((ny * SIDE, nz * SIDE, nx * SIDE), np.uint8)
    known = slots >= 0
    if known.any():
        raw = arena.data[slots[known]]  # (k, 512) copy out of the shared pages
        cells = np.unpackbits(raw, axis=1, bitorder="little").reshape(-1, SIDE, SIDE, SIDE)
        blocks = full.reshape(ny, SIDE, nz, SIDE, nx, SIDE).transpose(0, 2, 4, 1, 3, 5)
        blocks[iy[known], iz[known], ix[known]] = cells
    by, bz, bx = y0 - cy0 * SIDE, z0 - cz0 * SIDE, x0 - cx0 * SIDE
    sy, sz, sx = y1 - y0 + 1, z1 - z0 + 1, x1 - x0 + 1
    core = full[by : by + sy, bz : bz + sz, bx : bx + sx]
    layer = sx * sz
    solid = b"".join(
        (
            bytes(PAD_BELOW * layer),
            np.ascontiguousarray(core).tobytes(),
            b"\x01" * (PAD_ABOVE * layer),
        )
    )
    return Grid(x0, y0, z0, sx, sy, sz, solid)
