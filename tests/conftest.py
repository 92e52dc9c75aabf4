"""Shared fixtures. Real-server fixtures live in their own plugins:
tests/servers.py (throwaway PostgreSQL) and tests/redis_server.py (throwaway Redis)."""

pytest_plugins = ["tests.servers", "tests.redis_server"]
