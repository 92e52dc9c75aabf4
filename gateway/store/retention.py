"""Metrics retention (GATEWAY_METRICS_RETENTION): the pure parts both stores share.

PostgreSQL keeps metrics in one partition per UTC day (`metrics_pYYYYMMDD`) and drops whole
partitions once the day is past the cutoff; SQLite deletes expired rows in small batches. Either
way a row lives at least the retention and at most one day (PostgreSQL) longer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

DAY_MS = 86_400_000
PARTITIONS_AHEAD = 2  # days of partitions created ahead of today
RETENTION_BATCH = 5_000  # rows per DELETE: short transactions, writers interleave
_PARTITION = re.compile(r"^metrics_p(\d{8})$")


@dataclass(slots=True)
class RetentionReport:
    partitions_created: int = 0
    partitions_dropped: int = 0
    rows_deleted: int = 0


def partition_name(day: int) -> str:
    """`metrics_pYYYYMMDD` for `day` days since the epoch (UTC)."""
    return "metrics_p" + datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y%m%d")


def partition_day(name: str) -> int | None:
    """Days since the epoch of a partition name; None for other tables (the default one)."""
    m = _PARTITION.match(name)
    if m is None:
        return None
    when = datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC)
    return int(when.timestamp()) // 86_400


def parse_duration_s(text: str) -> int:
    """`7d`, `36h`, `90m`, `600s` or plain seconds → seconds; ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if m is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 7d, 36h, 90m or seconds)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}[m.group(2)]
    return int(m.group(1)) * unit
