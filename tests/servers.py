"""Pytest fixtures over the throwaway servers of gateway.testing (a plugin: tests/conftest.py).

`pg_server` / `redis_server`: one server per session; `pg_url`: a fresh database per test;
`redis_url`: the session's Redis, emptied for each test (and started again if a test stopped it).
`redis_cluster` / `redis_cluster_url`: the same for a Redis Cluster of three masters.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from gateway.testing.postgres_server import PostgresServer, PostgresServerError
from gateway.testing.redis_cluster import RedisClusterServers
from gateway.testing.redis_server import RedisServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
    except PostgresServerError as e:
        server.close()
        pytest.fail(str(e), pytrace=False)
    yield server
    server.close()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    return pg_server.create_database(f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    # A test that stopped the shared server must not break the ones after it.
    if not redis_server.running:
        redis_server.start()
    redis_server.flushall()
    yield redis_server.url
    with contextlib.suppress(OSError):
        if redis_server.running:
            redis_server.flushall()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterServers) -> Iterator[str]:
    # A test that killed a master must not break the ones after it.
    redis_cluster.start()
    redis_cluster.flushall()
    yield redis_cluster.url
    with contextlib.suppress(OSError):
        redis_cluster.start()
        redis_cluster.flushall()
