"""What both store backends share: column lists, timestamp shape, input checks, call timing."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from gateway.stats import RollingPercentiles
from gateway.types import PositionUpdate

EDITABLE_FIELDS = frozenset({"name", "role", "status"})
NPC_COLUMNS = (
    "id",
    "name",
    "role",
    "status",
    "x",
    "y",
    "z",
    "yaw",
    "pitch",
    "dim",
    "updated_at",
    "created_at",
)
UNKNOWN = "unknown"  # role and status of an NPC registered by `ensure_npc`


def iso(dt: datetime) -> str:
    """ISO 8601 in UTC, always with microseconds, so every timestamp has the same shape."""
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def now_iso() -> str:
    return iso(datetime.now(UTC))


def check_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """`changes` if it only touches editable fields; anything else is a caller bug."""
    unknown = set(changes) - EDITABLE_FIELDS
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}; only name, role, status")
    return dict(changes)


def latest_positions(updates: Iterable[PositionUpdate]) -> list[PositionUpdate]:
    """One update per id (the last wins), sorted by id: concurrent batches from two replicas
    then lock rows in the same order and cannot deadlock each other."""
    latest: dict[str, PositionUpdate] = {}
    for u in updates:
        latest[u["id"]] = u
    return [latest[k] for k in sorted(latest)]


def check_profile(profile: Any) -> dict[str, Any]:
    if not isinstance(profile, dict):
        raise TypeError(f"a learning profile is a JSON object, got {type(profile).__name__}")
    return profile


class CallStats:
    """Durations of recent store calls (rolling window, ms) and the number of writes."""

    def __init__(self, window: int = 2048) -> None:
        self._durations = RollingPercentiles(window)
        self.writes = 0

    @contextmanager
    def timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._durations.add((time.perf_counter() - start) * 1000.0)

    def percentiles(self) -> dict[str, float]:
        return self._durations.summary()
