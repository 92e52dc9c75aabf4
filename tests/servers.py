"""Throwaway PostgreSQL and Redis servers for the tests (filled in by the store work)."""
