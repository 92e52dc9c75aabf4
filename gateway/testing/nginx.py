"""nginx in front of gateway replicas, the way docs/scaling.md runs it (`make cluster`).

`render_nginx_conf` fills nginx.conf.template (beside this file); `Nginx` runs it in the
foreground with a private prefix, so the machine's own nginx is never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.testing.net import POLL_S, Listener, tail

TEMPLATE = Path(__file__).with_name("nginx.conf.template")
NGINX_BIN = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")


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


class Nginx(Listener):
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
                    f"nginx exited ({self.proc.returncode}):\n{tail(self.prefix / 'error.log')}"
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
