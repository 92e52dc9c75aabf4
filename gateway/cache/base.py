"""The cache interface and its three tiers.

The cache is an optimisation, never a source of truth: any method may fail (a backend that
is down answers `get` with None), and callers then read the store.
"""

from __future__ import annotations

from typing import Any, Protocol

HOT_TTL_S = 60.0  # latest positions
WARM_TTL_S = 300.0  # registry rows and status
COLD_TTL_S = 600.0  # learning profiles and metric queries


def hit_stats(backend: str, hits: int, misses: int) -> dict[str, Any]:
    """The figures every tier reports the same way (`stats`), before its own."""
    total = hits + misses
    return {
        "backend": backend,
        "hitRate": round(hits / total, 4) if total else 0.0,
        "totalHits": hits,
        "totalMisses": misses,
    }


class Cache(Protocol):
    backend: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def incr(self, key: str) -> int:
        """Atomically bump a version counter (used to invalidate groups of keys)."""

    async def version(self, key: str) -> int:
        """The current value of a version counter (0 if never bumped)."""

    async def close(self) -> None: ...

    def stats(self) -> dict[str, Any]:
        """`backend`, `hitRate`, `totalHits`, `totalMisses`."""
