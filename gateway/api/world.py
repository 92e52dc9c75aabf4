"""REST on the shared world model (§9): what is known of a dimension, and its heightmap."""

from __future__ import annotations

from aiohttp import web

from gateway.api.errors import ApiError, json_response
from gateway.keys import NODE
from gateway.protocol import MAX_COORD, MAX_DIM, clean_text
from gateway.world.model import MAX_HEIGHTMAP_SIDE


def _dim(request: web.Request) -> str:
    dim = request.match_info["dim"]
    if not clean_text(dim, MAX_DIM):
        raise ApiError(400, "bad_message", f"dim must be a string of 1-{MAX_DIM}")
    return dim


async def world_summary(request: web.Request) -> web.Response:
    """GET /api/world/{dim} → {"sections": N, "bounds": [x0,y0,z0,x1,y1,z1] | null}."""
    return json_response(request.app[NODE].world.summary(_dim(request)))


def parse_area(raw: str | None) -> tuple[int, int, int, int]:
    """`x0,z0,x1,z1`, inclusive corners in either order, at most 512x512 columns."""
    if raw is None:
        raise ApiError(400, "bad_message", "area=x0,z0,x1,z1 is required")
    parts = raw.split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        x0, z0, x1, z1 = (int(p) for p in parts)
    except ValueError:
        raise ApiError(400, "bad_message", "area must be four integers x0,z0,x1,z1") from None
    if any(abs(v) > MAX_COORD for v in (x0, z0, x1, z1)):
        raise ApiError(400, "bad_message", "area is out of the world's range")
    x0, x1 = min(x0, x1), max(x0, x1)
    z0, z1 = min(z0, z1), max(z0, z1)
    if x1 - x0 + 1 > MAX_HEIGHTMAP_SIDE or z1 - z0 + 1 > MAX_HEIGHTMAP_SIDE:
        raise ApiError(
            400,
            "bad_message",
            f"area is over {MAX_HEIGHTMAP_SIDE}x{MAX_HEIGHTMAP_SIDE} columns",
        )
    return x0, z0, x1, z1


async def heightmap(request: web.Request) -> web.Response:
    """GET /api/world/{dim}/heightmap?area=x0,z0,x1,z1 → top solid y per column (null: unknown)."""
    dim = _dim(request)
    x0, z0, x1, z1 = parse_area(request.query.get("area"))
    heights = request.app[NODE].world.heightmap(dim, x0, z0, x1, z1)
    return json_response(
        {"origin": [x0, z0], "size": [x1 - x0 + 1, z1 - z0 + 1], "heights": heights}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/world/{dim}", world_summary)
    app.router.add_get("/api/world/{dim}/heightmap", heightmap)
