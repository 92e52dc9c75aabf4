"""Region channels (docs/scaling.md): positions travel per 512x512 block square of a dimension.

Pure: which channel one position goes to, and which channels a replica's viewers need.
A replica with an unfiltered viewer (or a filter too wide to list) hears every region; a
replica without viewers hears none.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from gateway.protocol import Area

REGION_BLOCKS = 512
POSITIONS_PREFIX = "aicraft:pos:"
# A filter touching more regions than this is served from the all-regions subscription: a
# subscription per region would cost Redis more than the traffic it saves.
MAX_REGIONS_PER_REPLICA = 256

ALL = None  # `wanted_channels` result meaning "every region"


def region_of(x: float, z: float) -> tuple[int, int]:
    return math.floor(x / REGION_BLOCKS), math.floor(z / REGION_BLOCKS)


def region_channel(dim: str, x: float, z: float) -> str:
    rx, rz = region_of(x, z)
    return f"{POSITIONS_PREFIX}{dim}:{rx}:{rz}"


def is_positions_channel(channel: str) -> bool:
    return channel.startswith(POSITIONS_PREFIX)


def channels_for(dim: str, area: Area) -> set[str] | None:
    """The region channels one (dim, area) filter touches; None when there are too many."""
    x0, z0, x1, z1 = area
    (rx0, rz0), (rx1, rz1) = region_of(x0, z0), region_of(x1, z1)
    if (rx1 - rx0 + 1) * (rz1 - rz0 + 1) > MAX_REGIONS_PER_REPLICA:
        return None
    return {
        f"{POSITIONS_PREFIX}{dim}:{rx}:{rz}"
        for rx in range(rx0, rx1 + 1)
        for rz in range(rz0, rz1 + 1)
    }


def wanted_channels(views: Iterable[tuple[str | None, Area | None]]) -> set[str] | None:
    """What a replica whose viewers have these (dim, area) filters must hear: a set of
    region channels, or ALL. A filter without both a dimension and an area needs ALL
    (regions of a whole dimension, or of every dimension, cannot be listed)."""
    wanted: set[str] = set()
    for dim, area in views:
        if dim is None or area is None:
            return ALL
        channels = channels_for(dim, area)
        if channels is None:
            return ALL
        wanted |= channels
        if len(wanted) > MAX_REGIONS_PER_REPLICA:
            return ALL
    return wanted
