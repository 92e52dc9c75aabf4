"""Settings, read once from the environment into one frozen object and passed in."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """An environment variable holds a value the gateway cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of one replica. Build it with :meth:`from_env`; tests build it directly."""

    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path("./var")
    secret: str = field(default="", repr=False)
    replica_id: str = "local"
    tick_ms: int = 500
    metrics_flush_ms: int = 5000
    metrics_batch: int = 200
    workers: int = 2
    db_pool_max: int = 20
    # Seconds the database breaker stays OPEN before a trial call (writes wait that long after
    # the database returns; the default keeps a flapping database from being hammered).
    db_breaker_reset_s: float = 60.0
    rcon_url: str | None = None
    log_level: str = "INFO"
    # Flood control: token bucket per bot connection.
    rate_per_s: float = 50.0
    rate_burst: int = 100
    flood_close_s: float = 10.0  # a bot still flooding after this long is closed with 1008
    # REST writes per token.
    rest_write_per_s: float = 100.0
    rest_write_burst: int = 200
    # Slow viewers are closed after this long without a send completing.
    viewer_stall_s: float = 10.0
    # Start the worker processes with the app (True) or on the first task (tests).
    eager_workers: bool = True

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "gateway.sqlite3"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("GATEWAY_DATA_DIR") or "./var")
        secret = env.get("GATEWAY_SECRET") or load_or_create_secret(data_dir)
        return cls(
            database_url=env.get("GATEWAY_DATABASE_URL") or None,
            redis_url=env.get("GATEWAY_REDIS_URL") or None,
            data_dir=data_dir,
            secret=secret,
            replica_id=env.get("GATEWAY_REPLICA_ID") or f"{socket.gethostname()}-{os.getpid()}",
            tick_ms=_int(env, "GATEWAY_TICK_MS", 500),
            metrics_flush_ms=_int(env, "GATEWAY_METRICS_FLUSH_MS", 5000, minimum=1),
            metrics_batch=_int(env, "GATEWAY_METRICS_BATCH", 200, minimum=1),
            workers=_int(env, "GATEWAY_WORKERS", os.cpu_count() or 1, minimum=1),
            db_pool_max=_int(env, "GATEWAY_DB_POOL_MAX", 20, minimum=1),
            db_breaker_reset_s=float(_int(env, "GATEWAY_DB_BREAKER_RESET_S", 60, minimum=1)),
            rcon_url=env.get("GATEWAY_RCON_URL") or None,
            log_level=(env.get("GATEWAY_LOG_LEVEL") or "INFO").upper(),
            rate_per_s=float(_int(env, "GATEWAY_RATE_PER_S", 50, minimum=1)),
            rate_burst=_int(env, "GATEWAY_RATE_BURST", 100, minimum=1),
            rest_write_per_s=float(_int(env, "GATEWAY_REST_WRITES_PER_S", 100, minimum=1)),
            rest_write_burst=_int(env, "GATEWAY_REST_WRITES_BURST", 200, minimum=1),
        )


def load_or_create_secret(data_dir: Path) -> str:
    """Read the token secret from the data dir, creating it (mode 0600) on first use."""
    path = data_dir / "secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    # O_EXCL: if two processes race, one creates and the other reads what it wrote.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value
