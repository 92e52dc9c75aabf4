"""Command line: `serve`, `token`, `migrate` (§13), `simulate`.

Each command imports what it runs when it runs, so `token` loads no server and no simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import logging
import os
import signal
import sys

from gateway import simulate_cli
from gateway.auth import DEFAULT_TTL_S, Role, issue_token
from gateway.config import ConfigError, Settings

log = logging.getLogger("gateway")

# The `server` extra's packages (uvloop is optional): the SDK-only install has none of them.
SERVER_MODULES = ("aiohttp", "asyncpg", "redis", "prometheus_client", "numpy", "numba")


def missing_server_modules() -> list[str]:
    """The server's packages this install lacks (found without importing them)."""
    return [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]


def tune_gc() -> None:
    """Everything allocated so far lives as long as the process: keep it out of the cyclic
    collector's scans, and collect young objects less often (the hot path allocates a few
    short-lived dicts per update; full scans of a big heap show up as tick lateness). Full
    collections are left to the node's periodic one (GATEWAY_GC_FULL_EVERY_S), which bounds
    the garbage that connection churn leaves in cycles."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def serve(settings: Settings, host: str, port: int, reuse_port: bool = False) -> None:
    from aiohttp import web

    from gateway.app import create_app, make_runner, shut_down
    from gateway.keys import NODE

    app = create_app(settings)
    runner = make_runner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    # SO_REUSEPORT for `--processes N`: each child binds the same port (gateway/processes.py).
    site = web.TCPSite(
        runner, host, port, reuse_address=True, reuse_port=reuse_port or None, backlog=2048
    )
    await site.start()
    log.info(
        "serving",
        extra={
            "host": host,
            "port": port,
            "database": app[NODE].store.backend,
            "bus": app[NODE].bus.backend,
            "tick_ms": settings.tick_ms,
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tune_gc()
    print(f"gateway {settings.replica_id} listening on http://{host}:{port}", flush=True)
    await stop.wait()
    log.info("draining")
    await shut_down(runner)
    log.info("stopped")


async def migrate(settings: Settings) -> list[str]:
    from gateway.store import open_store

    store = open_store(settings, auto_migrate=False)
    await store.open()
    try:
        return await store.migrate()
    finally:
        await store.close()


def _run(coro: object) -> object:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    missing = missing_server_modules()
    if missing:
        # An SDK-only install (`pip install aicraft-gateway`): one line, not an ImportError.
        print(
            f"aicraft-gateway: the server is not installed (no {', '.join(missing)}):"
            " pip install 'aicraft-gateway[server]'",
            file=sys.stderr,
        )
        return 2
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run one gateway replica")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8080)
    p_serve.add_argument(
        "--processes",
        type=int,
        default=None,
        help="replicas on this port, one process each (default GATEWAY_PROCESSES or 1);"
        " more than 1 needs GATEWAY_REDIS_URL",
    )
    p_serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p_token = sub.add_parser("token", help="print a bearer token")
    p_token.add_argument("--role", required=True, choices=[r.value for r in Role])
    p_token.add_argument("--sub", required=True)
    p_token.add_argument("--ttl", type=int, default=DEFAULT_TTL_S, help="seconds (default 1 day)")
    sub.add_parser("migrate", help="apply schema/ to the configured database")
    simulate_cli.add_cli(sub)
    args = parser.parse_args(argv)
    if args.command == "simulate":
        return simulate_cli.main(args)

    try:
        settings = Settings.from_env()
        if args.command == "serve":
            from gateway.processes import check_processes, processes_from_env

            processes = processes_from_env(os.environ, args.processes)
            check_processes(processes, settings.redis_url)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    if args.command == "token":
        if args.ttl <= 0:
            parser.error("--ttl must be positive")
        print(issue_token(settings.secret, args.role, args.sub, args.ttl))
        return 0

    from gateway.logs import setup_logging
    from gateway.store.migrations import MigrationsMissing

    setup_logging(settings.log_level, settings.replica_id)
    try:
        if args.command == "migrate":
            applied = _run(migrate(settings))
            print(f"migrations applied: {', '.join(applied) if applied else 'none pending'}")  # type: ignore[arg-type]
            return 0
        if processes > 1:
            from gateway.processes import run_processes

            return run_processes(processes, args.host, args.port)
        _run(serve(settings, args.host, args.port, args.reuse_port))
    except MigrationsMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
