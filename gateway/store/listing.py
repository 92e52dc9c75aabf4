"""`list_npcs` and `query_metrics` for both store backends: the arguments taken once, the SQL
written once; each backend supplies its dialect's placeholders (and id-set tests)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.types import MetricRow, NpcMap


@dataclass(frozen=True, slots=True)
class NpcQuery:
    """One `list_npcs` call: its filters and its page."""

    status: str | None
    role: str | None
    only_ids: list[str] | None
    exclude_ids: list[str] | None
    after_id: str | None
    limit: int

    def where(self, param: Callable[[Any], str], in_ids: str, not_in_ids: str) -> str:
        """The WHERE clause of the filters ("" without any). `param(value)` binds a value and
        answers its placeholder; `in_ids` and `not_in_ids` test `id` against the id set bound
        at their `{}`."""
        clauses: list[str] = []
        if self.status is not None:
            clauses.append(f"status = {param(self.status)}")
        if self.role is not None:
            clauses.append(f"role = {param(self.role)}")
        if self.only_ids is not None:
            clauses.append(in_ids.format(param(self.only_ids)))
        if self.exclude_ids:
            clauses.append(not_in_ids.format(param(self.exclude_ids)))
        if self.after_id is not None:
            clauses.append(f"id > {param(self.after_id)}")
        return f" WHERE {' AND '.join(clauses)}" if clauses else ""


class NpcListing(Protocol):
    """`list_npcs`, part of :class:`gateway.store.base.Store`: the backends subclass this to
    inherit it, and answer `_list_npcs`."""

    async def list_npcs(
        self,
        *,
        status: str | None = None,
        role: str | None = None,
        only_ids: Collection[str] | None = None,
        exclude_ids: Collection[str] | None = None,
        after_id: str | None = None,
        limit: int = 100,
    ) -> list[NpcMap]:
        """NPCs ordered by id, strictly after `after_id`, at most `limit`."""
        return await self._list_npcs(
            NpcQuery(
                status,
                role,
                None if only_ids is None else list(only_ids),
                None if exclude_ids is None else list(exclude_ids),
                after_id,
                max(0, limit),
            )
        )

    async def _list_npcs(self, query: NpcQuery) -> list[NpcMap]: ...


@dataclass(frozen=True, slots=True)
class MetricsQuery:
    """One `query_metrics` call: its filters and its page."""

    npc: str | None
    name: str | None
    since_ms: int | None
    limit: int

    def sql(self, param: Callable[[Any], str]) -> str:
        """The SELECT, newest first; `param` as for :meth:`NpcQuery.where`."""
        tests = (("npc =", self.npc), ("name =", self.name), ("ts >=", self.since_ms))
        clauses = [f"{test} {param(value)}" for test, value in tests if value is not None]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return (
            f"SELECT npc, name, value, ts FROM metrics{where}"
            f" ORDER BY ts DESC LIMIT {param(self.limit)}"
        )


class MetricsListing(Protocol):
    """`query_metrics`, part of :class:`gateway.store.base.Store`: the backends subclass this
    to inherit it, and answer `_select_metrics`."""

    async def query_metrics(
        self,
        *,
        npc: str | None = None,
        name: str | None = None,
        since_ms: int | None = None,
        limit: int = 100,
    ) -> list[MetricRow]:
        """Newest first; `since_ms` is inclusive."""
        return await self._select_metrics(MetricsQuery(npc, name, since_ms, max(0, limit)))

    async def _select_metrics(self, query: MetricsQuery) -> list[MetricRow]: ...
