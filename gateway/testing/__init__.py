"""Throwaway servers for the tests, the benchmarks and `make cluster`: PostgreSQL and Redis from
the installed binaries, nginx, and gateways as real subprocesses.

Shipped with the package so that scripts/ and tests/ import them the same way, without path
tricks; the gateway itself never imports this package. It needs the `server` extra.
"""
