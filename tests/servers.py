"""Throwaway PostgreSQL servers for the tests (filled in by the store work)."""
