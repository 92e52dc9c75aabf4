"""`make cluster`: N gateway replicas behind nginx, on one PostgreSQL and one Redis.

    python scripts/cluster.py                       # 3 replicas on 8081.., nginx on 8080
    python scripts/cluster.py --replicas 5 --port 9000 --base-port 9001

Replicas share GATEWAY_DATABASE_URL and GATEWAY_REDIS_URL from the environment; when either is
unset, a throwaway server is started from the installed binaries (tests/servers.py,
tests/redis_server.py) and removed on exit. Every replica and nginx run in the foreground of
this script, with their logs in one temp dir; Ctrl-C (or SIGTERM) stops them all: replicas
with SIGTERM (they drain), then nginx, then the throwaway servers.

The pieces (`Replica`, `Nginx`, `render_nginx_conf`, `ClusterBackends`) are importable: the
cluster tests and scripts/bench_cluster.py use them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "scripts" / "cluster" / "nginx.conf.template"
NGINX_BIN = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
POLL_S = 0.05  # readiness poll interval of external processes (bounded by a deadline)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# -- replicas -------------------------------------------------------------------------------------
@dataclass
class Replica:
    """One `python -m gateway serve` process, its output in a log file (never an unread pipe)."""

    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Spawn the process; `wait_ready` waits for it."""
        cmd = [sys.executable, "-m", "gateway", "serve", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the supervisor, which stops in order
            )

    def wait_ready(self, deadline_s: float = 60.0) -> None:
        """Poll `/api/health` until 200 (migrations applied, bus started)."""
        end = time.monotonic() + deadline_s
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"replica {self.name} exited ({code}):\n{_tail(self.log_path)}")
            if http_status(self.http + "/api/health") == 200:
                return
            if time.monotonic() > end:
                raise TimeoutError(f"replica {self.name} not healthy in {deadline_s:.0f} s")
            time.sleep(POLL_S)

    def kill(self) -> None:
        """SIGKILL: no drain, no presence release (a crashed replica)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self, deadline_s: float = 20.0) -> int | None:
        """SIGTERM (drain), then SIGKILL if it has not exited by the deadline."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=deadline_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def replica_env(
    *,
    name: str,
    secret: str,
    database_url: str,
    redis_url: str,
    data_dir: Path,
    tick_ms: int | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    env = {
        **os.environ,
        "GATEWAY_SECRET": secret,
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_REPLICA_ID": name,
        "GATEWAY_DATA_DIR": str(data_dir),
    }
    env.setdefault("GATEWAY_WORKERS", "1")
    if tick_ms is not None:
        env["GATEWAY_TICK_MS"] = str(tick_ms)
    env.update(extra or {})
    return env


def start_replicas(
    ports: Sequence[int],
    *,
    secret: str,
    database_url: str,
    redis_url: str,
    work_dir: Path,
    tick_ms: int | None = None,
    names: Sequence[str] | None = None,
    extra_env: dict[str, str] | None = None,
    deadline_s: float = 60.0,
) -> list[Replica]:
    """Start one replica per port (all at once) and wait until every one is healthy."""
    replicas: list[Replica] = []
    for i, port in enumerate(ports):
        name = names[i] if names else f"r{i + 1}"
        data_dir = work_dir / name
        data_dir.mkdir(parents=True, exist_ok=True)
        env = replica_env(
            name=name,
            secret=secret,
            database_url=database_url,
            redis_url=redis_url,
            data_dir=data_dir,
            tick_ms=tick_ms,
            extra=extra_env,
        )
        replicas.append(Replica(name, port, env, work_dir / f"{name}.log"))
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready(deadline_s)
    except BaseException:
        for replica in replicas:
            replica.kill()
        raise
    return replicas


# -- nginx ----------------------------------------------------------------------------------------
def find_nginx() -> str | None:
    if Path(NGINX_BIN).is_file() and os.access(NGINX_BIN, os.X_OK):
        return NGINX_BIN
    return shutil.which("nginx")


def render_nginx_conf(
    prefix: Path,
    listen: str,
    upstream_ports: Sequence[int],
    template: Path = TEMPLATE,
) -> str:
    servers = "\n".join(
        f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;" for port in upstream_ports
    )
    return (
        template.read_text()
        .replace("{{PREFIX}}", str(prefix))
        .replace("{{LISTEN}}", listen)
        .replace("{{SERVERS}}", servers)
    )


class Nginx:
    """nginx in the foreground, private prefix: `nginx -p DIR -c FILE -g "daemon off;"`."""

    def __init__(
        self,
        upstream_ports: Sequence[int],
        port: int,
        prefix: Path,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
    ) -> None:
        found = binary or find_nginx()
        if found is None:
            raise RuntimeError(
                f"nginx not found at {NGINX_BIN}: apt-get install -y nginx-light (or set NGINX_BIN)"
            )
        self.binary = found
        self.port = port
        self.host = host
        self.prefix = prefix
        self.upstream_ports = list(upstream_ports)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def conf_path(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self, deadline_s: float = 15.0) -> None:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        # Worker processes drop root for `nobody`: they must be able to reach the temp paths.
        for path in (self.prefix, self.prefix / "tmp"):
            path.chmod(0o755)
        self.conf_path.write_text(
            render_nginx_conf(self.prefix, f"{self.host}:{self.port}", self.upstream_ports)
        )
        base = [self.binary, "-p", str(self.prefix), "-e", str(self.prefix / "error.log")]
        base += ["-c", str(self.conf_path)]
        check = subprocess.run([*base, "-t"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx config rejected:\n{check.stderr}")
        log = (self.prefix / "nginx.out").open("ab")
        try:
            self.proc = subprocess.Popen(
                [*base, "-g", "daemon off;"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        end = time.monotonic() + deadline_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nginx exited ({self.proc.returncode}):\n{_tail(self.prefix / 'error.log')}"
                )
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
                return
            if time.monotonic() > end:
                self.stop()
                raise TimeoutError("nginx did not start listening")
            time.sleep(POLL_S)

    def stop(self, deadline_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # fast shutdown of the master and its workers
        try:
            proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- PostgreSQL and Redis -------------------------------------------------------------------------
@dataclass
class ClusterBackends:
    """The shared database and Redis: from the environment, or throwaway servers."""

    database_url: str
    redis_url: str
    owned: list[Any] = field(default_factory=list)  # servers started here, closed on exit

    @classmethod
    def from_env_or_throwaway(cls, env: dict[str, str] | None = None) -> ClusterBackends:
        env = dict(os.environ if env is None else env)
        owned: list[Any] = []
        try:
            db_url = env.get("GATEWAY_DATABASE_URL") or ""
            if not db_url:
                sys.path.insert(0, str(REPO))
                from tests.servers import PostgresServer

                pg = PostgresServer()
                owned.append(pg)
                pg.start()
                db_url = pg.create_database(f"cluster_{secrets.token_hex(4)}")
            redis_url = env.get("GATEWAY_REDIS_URL") or ""
            if not redis_url:
                sys.path.insert(0, str(REPO))
                from tests.redis_server import RedisServer

                redis = RedisServer()
                owned.append(redis)
                redis.start()
                redis_url = redis.url
        except BaseException:
            for server in reversed(owned):
                with contextlib.suppress(Exception):
                    server.close()
            raise
        return cls(db_url, redis_url, owned)

    def close(self) -> None:
        for server in reversed(self.owned):
            with contextlib.suppress(Exception):
                server.close()
        self.owned.clear()


@contextlib.contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """Turn SIGTERM into KeyboardInterrupt too, so one path stops everything."""
    got: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        got.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--replicas", type=int, default=int(os.environ.get("REPLICAS", "3")))
    p.add_argument("--port", type=int, default=8080, help="nginx listens here (127.0.0.1)")
    p.add_argument("--base-port", type=int, default=8081, help="replica i listens on base+i")
    p.add_argument("--tick-ms", type=int, default=None, help="GATEWAY_TICK_MS (default 500)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs) on exit")
    args = p.parse_args(argv)
    if args.replicas < 1:
        p.error("--replicas must be >= 1")
    ports = [args.base_port + i for i in range(args.replicas)]
    busy = [port for port in [args.port, *ports] if not port_is_free(port)]
    if busy:
        print(f"cluster: ports already in use: {busy}", file=sys.stderr)
        return 2
    if find_nginx() is None:
        print(f"cluster: nginx not found ({NGINX_BIN}); apt-get install -y nginx-light")
        return 2

    secret = os.environ.get("GATEWAY_SECRET") or secrets.token_urlsafe(32)
    work = Path(tempfile.mkdtemp(prefix="aicraft-cluster-"))
    backends: ClusterBackends | None = None
    replicas: list[Replica] = []
    nginx: Nginx | None = None
    with _stop_signals():
        try:
            print("cluster: starting PostgreSQL/Redis (if not given) ...", flush=True)
            backends = ClusterBackends.from_env_or_throwaway()
            print(f"cluster: starting {args.replicas} replicas on {ports} ...", flush=True)
            replicas = start_replicas(
                ports,
                secret=secret,
                database_url=backends.database_url,
                redis_url=backends.redis_url,
                work_dir=work,
                tick_ms=args.tick_ms,
            )
            nginx = Nginx(ports, args.port, work / "nginx")
            nginx.start()
            from gateway.auth import issue_token

            viewer = issue_token(secret, "viewer", "cluster-viewer", 86400)
            admin = issue_token(secret, "admin", "cluster-admin", 86400)
            base = f"http://127.0.0.1:{args.port}"
            print(
                f"""
  AICraft cluster: nginx on {base} (least_conn) -> {len(replicas)} replicas
{chr(10).join(f"    {r.name}: {r.http}" for r in replicas)}
  PostgreSQL: {backends.database_url}
  Redis:      {backends.redis_url}
  Logs:       {work}

  Live map:   {base}/?token={viewer}
  Admin:      curl -H 'Authorization: Bearer {admin}' {base}/api/performance
  Bot socket: ws://127.0.0.1:{args.port}/ws/npc
  Tokens:     GATEWAY_SECRET='{secret}' .venv/bin/python -m gateway token --role npc --sub miner_1

  Ctrl-C stops everything.
""",
                flush=True,
            )
            while True:
                for replica in replicas:
                    if not replica.alive:
                        print(f"cluster: replica {replica.name} exited", file=sys.stderr)
                        return 1
                if nginx.proc is None or nginx.proc.poll() is not None:
                    print("cluster: nginx exited", file=sys.stderr)
                    return 1
                time.sleep(1.0)  # supervision poll, not synchronisation
        except KeyboardInterrupt:
            print("\ncluster: stopping ...", flush=True)
            return 0
        finally:
            for replica in replicas:
                if replica.alive and replica.proc is not None:
                    replica.proc.send_signal(signal.SIGTERM)  # drain all at once
            for replica in replicas:
                replica.terminate()
            if nginx is not None:
                nginx.stop()
            if backends is not None:
                backends.close()
            if args.keep:
                print(f"cluster: logs kept in {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
