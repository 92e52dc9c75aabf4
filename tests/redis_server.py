"""Throwaway Redis servers for the tests (filled in by the Redis work)."""
