"""`list_npcs` for both store backends: the arguments taken once, the WHERE clause written
once; each backend supplies its SQL dialect's parameters and id-set tests."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.types import NpcMap


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
