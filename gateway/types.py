"""Types shared across modules. Wire-shaped values stay plain dicts: they are encoded as-is."""

from __future__ import annotations

from typing import Any, NamedTuple, TypedDict


class PositionUpdate(TypedDict):
    """One NPC's position as it appears in a `positions` frame (§11)."""

    id: str
    x: float
    y: float
    z: float
    yaw: float
    pitch: float
    dim: str


class MetricRow(NamedTuple):
    """One metric sample (docs/api.md "metric row")."""

    npc: str
    name: str
    value: float
    ts: int  # epoch milliseconds


# The contract's flat NPC map (REST and `snapshot`): id, name, role, status, online, x, y, z,
# yaw, pitch, dim, updated_at, created_at. Stores return it without `online`.
NpcMap = dict[str, Any]

NPC_FIELDS = ("id", "name", "role", "status", "x", "y", "z", "yaw", "pitch", "dim")
