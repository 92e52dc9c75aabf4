"""Shared fixtures. Real-server fixtures (throwaway PostgreSQL, Redis) live in tests/servers.py."""

pytest_plugins = ["tests.servers"]
