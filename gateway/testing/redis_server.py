"""Throwaway Redis servers for tests and benchmarks (tests/servers.py has the fixtures).

`RedisServer` runs `redis-server` on a free loopback port, without persistence, in its own
temporary directory. `stop()` and `start()` again on the same port simulate an outage;
`pause()`/`resume()` a hung server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.testing.net import free_port

REDIS_SERVER_BIN = os.environ.get("REDIS_SERVER_BIN", "/usr/bin/redis-server")


def _ping(port: int) -> bool:
    """One raw RESP PING: readiness without depending on the client library under test."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A `redis-server` process on 127.0.0.1; the port survives stop/start."""

    def __init__(
        self,
        port: int | None = None,
        binary: str = REDIS_SERVER_BIN,
        extra_args: Sequence[str] = (),
    ) -> None:
        resolved = shutil.which(binary)
        if resolved is None:
            raise RuntimeError(
                f"redis-server not found at {binary!r}: install it (apt-get install redis-server)"
                " or set REDIS_SERVER_BIN"
            )
        self._binary = resolved
        self._extra_args = list(extra_args)  # e.g. cluster mode (gateway/testing/redis_cluster.py)
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="aicraft-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        log = self._dir / "redis.log"
        args = [
            self._binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self._dir),
            "--logfile", str(log),
            *self._extra_args,
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while not _ping(self.port):
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                tail = log.read_text()[-2000:] if log.exists() else ""
                self._proc = None
                raise RuntimeError(f"redis-server exited on port {self.port}: {err}{tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} not ready in {timeout_s}s")
            time.sleep(0.01)  # readiness poll of an external process, bounded by the deadline

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections stay open, nothing answers — a hung Redis."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: a crash. The data (none is persisted) is gone; `start()` brings it back."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused server would not act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def command(self, *args: str) -> bytes:
        """Send one command over a raw socket and return the first reply chunk (for tests)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(65536)

    def flushall(self) -> None:
        reply = self.command("FLUSHALL")
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL failed: {reply!r}")

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
