"""The database and Redis a cluster of replicas shares: from the environment, or throwaway."""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass, field

from gateway.testing.postgres_server import PostgresServer
from gateway.testing.redis_server import RedisServer


@dataclass
class ClusterBackends:
    """The shared database and Redis: from the environment, or throwaway servers."""

    database_url: str = ""
    redis_url: str = ""
    # Servers started here, closed on exit.
    owned: list[PostgresServer | RedisServer] = field(default_factory=list)

    @classmethod
    def from_env_or_throwaway(cls, env: dict[str, str] | None = None) -> ClusterBackends:
        env = dict(os.environ if env is None else env)
        backends = cls(env.get("GATEWAY_DATABASE_URL") or "", env.get("GATEWAY_REDIS_URL") or "")
        try:
            if not backends.database_url:
                pg = PostgresServer()
                backends.owned.append(pg)
                pg.start()
                backends.database_url = pg.create_database(f"cluster_{secrets.token_hex(4)}")
            if not backends.redis_url:
                redis = RedisServer()
                backends.owned.append(redis)
                redis.start()
                backends.redis_url = redis.url
        except BaseException:
            backends.close()
            raise
        return backends

    def close(self) -> None:
        for server in reversed(self.owned):
            with contextlib.suppress(Exception):
                server.close()
        self.owned.clear()
