"""The store interface; every backend passes one contract suite (tests/integration/test_store.py).

Guarantees every implementation gives:
- `write_positions` is one atomic write for the whole batch (PostgreSQL: COPY into a staging
  table and one UPDATE, in one transaction; SQLite: one prepared UPDATE in one transaction);
  it never creates or resurrects an NPC (positions of an unknown or deleted NPC are ignored).
- `insert_metrics` writes all rows or none.
- Methods raise :class:`StoreUnavailable` when the database cannot be reached, so callers can
  keep what they hold and retry; they never raise it for bad input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from gateway.store.listing import MetricsListing, NpcListing
from gateway.store.retention import RetentionReport
from gateway.types import MetricRow, NpcMap, PositionUpdate


class StoreUnavailable(RuntimeError):
    """The database could not be reached or failed; the operation had no effect."""


class NpcExists(ValueError):
    """An NPC with that id is already registered."""


class Store(NpcListing, MetricsListing, Protocol):
    # list_npcs and query_metrics are declared and written once, in store/listing.py.
    backend: str  # "sqlite" | "postgres"

    async def open(self) -> None:
        """Connect (pool or thread) and apply pending migrations."""

    async def close(self) -> None: ...

    async def migrate(self) -> list[str]:
        """Apply pending files of `schema/`; return the names applied now (idempotent)."""

    # -- registry -------------------------------------------------------------------------------
    async def ensure_npc(self, npc_id: str) -> NpcMap:
        """Return the NPC, registering it with role `unknown` and status `unknown` if absent."""

    async def create_npc(self, npc_id: str, name: str, role: str, status: str) -> NpcMap:
        """Register a new NPC; raise :class:`NpcExists` if the id is taken."""

    async def get_npc(self, npc_id: str) -> NpcMap | None: ...

    async def update_npc(self, npc_id: str, changes: dict[str, Any]) -> NpcMap | None:
        """Change any of name, role, status; None if the NPC is unknown."""

    async def delete_npc(self, npc_id: str) -> bool:
        """Remove the NPC with its profile and metrics; False if it was unknown."""

    async def set_status(self, npc_id: str, status: str) -> bool: ...

    async def write_positions(self, updates: Sequence[PositionUpdate]) -> int:
        """Store the latest position of each NPC in the batch, in one statement; how many
        NPCs were written (unknown ids are not)."""

    # -- learning profiles ----------------------------------------------------------------------
    async def get_profile(self, npc_id: str) -> dict[str, Any] | None: ...

    async def put_profile(self, npc_id: str, profile: dict[str, Any]) -> dict[str, Any]: ...

    async def update_profile(
        self, npc_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Apply `change` to the profile atomically (no lost update across replicas)."""

    # -- metrics --------------------------------------------------------------------------------
    async def maintain_metrics(self, retention_ms: int, now_ms: int) -> RetentionReport:
        """Drop metrics older than `retention_ms` before `now_ms` (see store/retention.py)."""

    async def insert_metrics(self, rows: Sequence[MetricRow]) -> int:
        """How many rows were inserted (rows of unknown NPCs are not)."""

    # -- the world model (§9) -----------------------------------------------------------------
    async def write_sections(self, rows: Sequence[tuple[str, int, int, int, bytes]]) -> int:
        """Store (dim, cx, cy, cz, 512-byte bitset) rows in one statement, replacing what each
        section held; keys are unique within a batch. How many rows were written."""

    async def load_sections(self) -> list[tuple[str, int, int, int, bytes]]:
        """Every stored section (start-up)."""

    # -- figures --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """`backend`, `activeConnections`, `idleConnections`, `queryTime` {p50,p95,p99} in ms,
        `writes` (statements that changed data)."""
