"""The volume a search on the model covers, chosen on the event loop (pure)."""

from __future__ import annotations

Box = tuple[int, int, int, int, int, int]  # x0, y0, z0, x1, y1, z1 inclusive block coordinates
Cell = tuple[int, int, int]


def search_box(
    start: Cell,
    goal: Cell,
    bounds: Box,
    margin_xz: int,
    margin_y: int,
) -> Box | None:
    """The volume to search: start and goal's hull widened by the margins, cut to what is known
    (plus one block in y). None when start or goal lies outside the known bounds."""
    bx0, by0, bz0, bx1, by1, bz1 = bounds
    for x, y, z in (start, goal):
        if not (bx0 <= x <= bx1 and by0 <= y <= by1 + 1 and bz0 <= z <= bz1):
            return None
    x0 = max(min(start[0], goal[0]) - margin_xz, bx0)
    x1 = min(max(start[0], goal[0]) + margin_xz, bx1)
    z0 = max(min(start[2], goal[2]) - margin_xz, bz0)
    z1 = min(max(start[2], goal[2]) + margin_xz, bz1)
    y0 = max(min(start[1], goal[1]) - margin_y, by0 - 1)
    y1 = min(max(start[1], goal[1]) + margin_y, by1 + 1)
    return x0, y0, z0, x1, y1, z1


def box_cells(box: Box) -> int:
    x0, y0, z0, x1, y1, z1 = box
    return (x1 - x0 + 1) * (y1 - y0 + 1) * (z1 - z0 + 1)
