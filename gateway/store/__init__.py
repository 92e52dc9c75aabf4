"""Persistence: the :class:`Store` interface and its SQLite and PostgreSQL implementations."""

from gateway.store.base import NpcExists, Store, StoreUnavailable

__all__ = ["NpcExists", "Store", "StoreUnavailable", "open_store"]


def open_store(settings):  # type: ignore[no-untyped-def]
    """The store the settings select: PostgreSQL for a postgresql:// URL, else embedded SQLite."""
    from gateway.config import Settings

    assert isinstance(settings, Settings)
    if settings.database_url:
        from gateway.store.postgres import PostgresStore

        return PostgresStore(settings.database_url, pool_max=settings.db_pool_max)
    from gateway.store.sqlite import SqliteStore

    return SqliteStore(settings.sqlite_path)
