"""Settings, read once from the environment into one frozen object and passed in."""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.redis_url import CLUSTER_SCHEME, cluster_seeds
from gateway.store.retention import parse_duration_s

MIN_SECRET_BYTES = 32  # HMAC-SHA256 key: shorter is guessable (§2)


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


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A switch: 1/true/yes/on or 0/false/no/off (any case); unset or empty is `default`."""
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")


REDIS_SCHEMES = ("redis", "rediss", "unix", CLUSTER_SCHEME)


def _redis_url(raw: str | None) -> str | None:
    """The Redis URL, or a ConfigError for a scheme the gateway cannot use."""
    if not raw:
        return None
    scheme = raw.split("://", 1)[0] if "://" in raw else ""
    if scheme not in REDIS_SCHEMES:
        raise ConfigError(
            "GATEWAY_REDIS_URL must start with redis://, rediss://, unix://"
            " or redis+cluster:// (a Redis Cluster: redis+cluster://HOST:PORT[,HOST:PORT...])"
        )
    if scheme == CLUSTER_SCHEME:
        try:
            cluster_seeds(raw)
        except ValueError as exc:
            raise ConfigError(f"GATEWAY_REDIS_URL: seed node {exc}") from None
    return raw


def _origins(raw: str | None) -> tuple[str, ...] | None:
    """`GATEWAY_ALLOWED_ORIGINS`: comma-separated origins (`https://host[:port]`); unset: any."""
    if raw is None or not raw.strip():
        return None
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if "://" not in origin:
            raise ConfigError(f"GATEWAY_ALLOWED_ORIGINS: {origin!r} is not scheme://host[:port]")
    return origins


def _duration(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse_duration_s(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum} s, got {raw!r}")
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
    # Metrics (task:* rows too) older than this are dropped (GATEWAY_METRICS_RETENTION).
    metrics_retention_s: int = 7 * 86_400
    # A full garbage collection this often (0: never; the thresholds `serve` sets make them
    # rare otherwise, and closed connections' cycles would pile up for hours).
    gc_full_every_s: float = 30.0
    # Bots' frames straight from aiohttp's parser, and writes without a task switch
    # (gateway/direct_ws.py); off falls back to aiohttp's public paths (GATEWAY_DIRECT_DISPATCH).
    direct_dispatch: bool = True
    # Accepted metric rows are journaled in `<data dir>/journal` until written, so a killed
    # replica loses none (gateway/core/journal.py); GATEWAY_METRICS_JOURNAL=0 keeps them in memory.
    metrics_journal: bool = True
    rcon_url: str | None = None
    log_level: str = "INFO"
    # Flood control: token bucket per bot connection.
    rate_per_s: float = 50.0
    rate_burst: int = 100
    flood_close_s: float = 10.0  # a bot still flooding after this long is closed with 1008
    # Viewers only subscribe and ping: a tight bucket per viewer connection.
    viewer_rate_per_s: float = 10.0
    viewer_rate_burst: int = 20
    # REST writes per token.
    rest_write_per_s: float = 100.0
    rest_write_burst: int = 200
    # Slow viewers are closed after this long without a send completing.
    viewer_stall_s: float = 10.0
    # Bots with unsent output are closed (1008) after this long without a send completing.
    bot_stall_s: float = 10.0
    # A connection without a complete request head this long after it opened (or after its
    # last response) is closed: idle and half-sent heads cannot pile up (§5).
    head_timeout_s: float = 15.0
    # Pathfinding/mining requests one client (a token's role and sub) may have in flight.
    path_in_flight: int = 4
    # Start the worker processes with the app (True) or on the first task (tests).
    eager_workers: bool = True
    # Browsers' Origin values allowed to open a WebSocket; None: any (and requests without one).
    allowed_origins: tuple[str, ...] | None = None
    # Event history (§11): the last N events or S seconds, whichever is less.
    history_events: int = 10_000
    history_seconds: int = 600
    # How long a command for an offline bot waits for it (§10).
    command_queue_s: int = 60
    # The shared world model (§9): sections it holds (512 B each, mapped by the workers),
    # and how far around start and goal a search on it may go (blocks).
    world_sections: int = 262_144
    world_margin_xz: int = 64
    world_margin_y: int = 32

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "gateway.sqlite3"

    @property
    def journal_dir(self) -> Path:
        return self.data_dir / "journal"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("GATEWAY_DATA_DIR") or "./var")
        given = env.get("GATEWAY_SECRET")
        secret = check_secret(given, "GATEWAY_SECRET") if given else load_or_create_secret(data_dir)
        return cls(
            database_url=env.get("GATEWAY_DATABASE_URL") or None,
            redis_url=_redis_url(env.get("GATEWAY_REDIS_URL")),
            data_dir=data_dir,
            secret=secret,
            replica_id=env.get("GATEWAY_REPLICA_ID") or f"{socket.gethostname()}-{os.getpid()}",
            tick_ms=_int(env, "GATEWAY_TICK_MS", 500),
            metrics_flush_ms=_int(env, "GATEWAY_METRICS_FLUSH_MS", 5000, minimum=1),
            metrics_batch=_int(env, "GATEWAY_METRICS_BATCH", 200, minimum=1),
            workers=_int(env, "GATEWAY_WORKERS", os.cpu_count() or 1, minimum=1),
            db_pool_max=_int(env, "GATEWAY_DB_POOL_MAX", 20, minimum=1),
            db_breaker_reset_s=float(_int(env, "GATEWAY_DB_BREAKER_RESET_S", 60, minimum=1)),
            metrics_retention_s=_duration(env, "GATEWAY_METRICS_RETENTION", 7 * 86_400),
            gc_full_every_s=float(_int(env, "GATEWAY_GC_FULL_EVERY_S", 30, minimum=0)),
            direct_dispatch=env_flag(env, "GATEWAY_DIRECT_DISPATCH", True),
            metrics_journal=env_flag(env, "GATEWAY_METRICS_JOURNAL", True),
            rcon_url=env.get("GATEWAY_RCON_URL") or None,
            log_level=(env.get("GATEWAY_LOG_LEVEL") or "INFO").upper(),
            rate_per_s=float(_int(env, "GATEWAY_RATE_PER_S", 50, minimum=1)),
            rate_burst=_int(env, "GATEWAY_RATE_BURST", 100, minimum=1),
            viewer_rate_per_s=float(_int(env, "GATEWAY_VIEWER_RATE_PER_S", 10, minimum=1)),
            viewer_rate_burst=_int(env, "GATEWAY_VIEWER_RATE_BURST", 20, minimum=1),
            rest_write_per_s=float(_int(env, "GATEWAY_REST_WRITES_PER_S", 100, minimum=1)),
            rest_write_burst=_int(env, "GATEWAY_REST_WRITES_BURST", 200, minimum=1),
            allowed_origins=_origins(env.get("GATEWAY_ALLOWED_ORIGINS")),
            path_in_flight=_int(env, "GATEWAY_PATH_IN_FLIGHT", 4, minimum=1),
            history_events=_int(env, "GATEWAY_HISTORY_EVENTS", 10_000, minimum=1),
            history_seconds=_int(env, "GATEWAY_HISTORY_SECONDS", 600, minimum=1),
            command_queue_s=_int(env, "GATEWAY_COMMAND_QUEUE_S", 60, minimum=1),
            world_sections=_int(env, "GATEWAY_WORLD_SECTIONS", 262_144, minimum=1),
            world_margin_xz=_int(env, "GATEWAY_WORLD_MARGIN", 64),
            world_margin_y=_int(env, "GATEWAY_WORLD_MARGIN_Y", 32),
        )


def check_secret(secret: str, source: str) -> str:
    """`secret` if it is long enough to sign tokens with; a ConfigError saying why not."""
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{source} holds a {size}-byte secret; tokens need at least {MIN_SECRET_BYTES} bytes"
            " (unset GATEWAY_SECRET and delete the file to have one generated)"
        )
    return secret


def load_or_create_secret(data_dir: Path) -> str:
    """Read the token secret from the data dir, creating it (mode 0600) on first use.

    Created whole or not at all: the value is written to a private temp file, then linked to
    its name. `link` fails if the name exists, so of replicas starting at once one creates it
    and the others read that complete file (never an empty or half-written one).
    """
    path = data_dir / "secret"
    try:
        return check_secret(path.read_text().strip(), str(path))
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd, tmp = tempfile.mkstemp(prefix=".secret-", dir=data_dir)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return check_secret(path.read_text().strip(), str(path))
    finally:
        os.unlink(tmp)
    return value
