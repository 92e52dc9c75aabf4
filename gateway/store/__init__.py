"""Persistence: the :class:`Store` interface and its SQLite and PostgreSQL implementations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.store.base import NpcExists, Store, StoreUnavailable

if TYPE_CHECKING:
    from gateway.config import Settings

__all__ = ["NpcExists", "Store", "StoreUnavailable", "open_store"]


def open_store(settings: Settings, *, auto_migrate: bool = True) -> Store:
    """The store the settings select: PostgreSQL for a postgresql:// URL, else embedded SQLite.
    With `auto_migrate`, opening it applies pending migrations (what `serve` wants)."""
    if settings.database_url:
        from gateway.store.postgres import PostgresStore

        return PostgresStore(
            settings.database_url, pool_max=settings.db_pool_max, auto_migrate=auto_migrate
        )
    from gateway.store.sqlite import SqliteStore

    return SqliteStore(settings.sqlite_path, auto_migrate=auto_migrate)
