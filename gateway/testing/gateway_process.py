"""Gateways as real subprocesses: one (`GatewayProcess`) or a cluster of replicas sharing a
database and Redis (`start_replicas`)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.testing.net import POLL_S, Listener, free_port, http_status, tail


class GatewayProcess(Listener):
    """`python -m gateway serve` (or `command … serve`) as a real subprocess, on `port`.

    Its output goes to `log_path` (a temp file by default), appended across restarts: a pipe
    nobody reads would block a chatty replica. `env` is laid over this process's environment.
    `own_session`: Ctrl-C in a terminal reaches only the supervisor, which stops it in order.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        port: int | None = None,
        *,
        name: str = "gateway",
        command: Sequence[str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        own_session: bool = False,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.env = {**os.environ, **env}
        self.command = list(command or [sys.executable, "-m", "gateway"])
        self.cwd = cwd
        self.own_session = own_session
        if log_path is None:
            with tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False) as f:
                log_path = Path(f.name)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process without waiting for it (`wait_listening`, `wait_ready`)."""
        cmd = [*self.command, "serve", "--port", str(self.port)]
        # The child has its own descriptor; ours is closed at once.
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_session,
            )

    def start(self, deadline_s: float = 30.0) -> None:
        """Start the process; return once it accepts connections."""
        self.spawn()
        self.wait_listening(deadline_s)

    def wait_listening(self, deadline_s: float = 30.0) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            self._check_running()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(POLL_S)
        raise TimeoutError(f"{self.name} did not start listening")

    def wait_ready(self, deadline_s: float = 60.0) -> None:
        """Poll `/api/health` until 200 (migrations applied, bus started)."""
        end = time.monotonic() + deadline_s
        while True:
            self._check_running()
            if http_status(self.http + "/api/health") == 200:
                return
            if time.monotonic() > end:
                raise TimeoutError(f"{self.name} not healthy in {deadline_s:.0f} s")
            time.sleep(POLL_S)

    def _check_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise RuntimeError(f"{self.name} exited ({code}):\n{tail(self.log_path)}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no drain, no presence release (a crashed replica)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self, deadline_s: float = 30.0) -> tuple[int | None, str]:
        """SIGTERM (drain), then SIGKILL if it has not exited by the deadline; its exit code
        (None if it never started) and its output."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=deadline_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return (None if self.proc is None else self.proc.returncode), self.output()


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
) -> list[GatewayProcess]:
    """Start one replica per port (all at once) and wait until every one is healthy; each
    has its data dir and log in `work_dir`, named after it (r1, r2, … by default)."""
    replicas: list[GatewayProcess] = []
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
        replicas.append(
            GatewayProcess(
                env, port, name=name, log_path=work_dir / f"{name}.log", own_session=True
            )
        )
    try:
        for replica in replicas:
            replica.spawn()
        for replica in replicas:
            replica.wait_ready(deadline_s)
    except BaseException:
        for replica in replicas:
            replica.kill()
        raise
    return replicas
