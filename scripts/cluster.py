"""`make cluster`: N gateway replicas behind nginx, on one PostgreSQL and one Redis.

    python scripts/cluster.py                       # 3 replicas on 8081.., nginx on 8080
    python scripts/cluster.py --replicas 5 --port 9000 --base-port 9001

Replicas share GATEWAY_DATABASE_URL and GATEWAY_REDIS_URL from the environment; when either is
unset, a throwaway server is started from the installed binaries (gateway/testing/) and
removed on exit. Every replica and nginx run in the foreground of this script, with their logs
in one temp dir; Ctrl-C (or SIGTERM) stops them all: replicas with SIGTERM (they drain), then
nginx, then the throwaway servers.

The pieces (`start_replicas`, `Nginx`, `ClusterBackends`) are in gateway/testing/, which the
cluster tests, the chaos soak and the cluster benchmarks use too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.testing.backends import ClusterBackends
from gateway.testing.gateway_process import GatewayProcess, start_replicas
from gateway.testing.net import port_is_free
from gateway.testing.nginx import NGINX_BIN, Nginx, find_nginx


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
    replicas: list[GatewayProcess] = []
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
