"""Throwaway PostgreSQL 15 servers for tests and benchmarks (tests/servers.py has the fixtures).

It never touches the machine's own server: its own port, socket directory and data directory
live in a temporary directory that is removed when the server is closed or the process exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

from gateway.testing.net import free_port

PG_BIN = Path(os.environ.get("AICRAFT_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"

_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sock}'
max_connections = 200
shared_buffers = 64MB
# Throwaway data: durability buys nothing here and costs a lot of time.
fsync = off
full_page_writes = off
synchronous_commit = off
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
log_min_messages = warning
"""


class PostgresServerError(RuntimeError):
    """The throwaway server could not be set up or started."""


def _as_pg_user() -> list[str]:
    # initdb refuses to run as root, and the sessions here run as root.
    return ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []


def _cleanup(base: Path, data: Path) -> None:
    """Stop a server left running and remove its files (also runs at interpreter exit)."""
    if (data / "postmaster.pid").exists():
        subprocess.run(
            [*_as_pg_user(), str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
    shutil.rmtree(base, ignore_errors=True)


class PostgresServer:
    """A PostgreSQL 15 server of its own, in a temp dir, on a free port.

    `stop()` keeps the data so `start()` brings the same cluster back on the same port (outage
    tests); `close()` stops it and deletes everything.
    """

    def __init__(self, bin_dir: Path = PG_BIN, *, start_timeout: float = 30.0) -> None:
        self.bin_dir = bin_dir
        self.start_timeout = start_timeout
        self.port = 0
        self._base: Path | None = None
        self._finalizer: weakref.finalize | None = None

    # -- paths ------------------------------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        if self._base is None:
            raise PostgresServerError("server was never started")
        return self._base

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "sock"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    # -- lifecycle --------------------------------------------------------------------------------
    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*_as_pg_user(), *args], capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise PostgresServerError(
                f"{' '.join(args)} failed ({result.returncode}): {result.stderr or result.stdout}"
            )
        return result

    def _init(self) -> None:
        for tool in ("initdb", "pg_ctl", "postgres", "createdb"):
            if not (self.bin_dir / tool).exists():
                raise PostgresServerError(
                    f"PostgreSQL 15 binaries not found: {self.bin_dir / tool} is missing "
                    "(install postgresql-15, or set AICRAFT_PG_BIN to its bin directory)"
                )
        base = Path(tempfile.mkdtemp(prefix="aicraft-pg-"))
        self._base = base
        self._finalizer = weakref.finalize(self, _cleanup, base, base / "data")
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(base, PG_USER, PG_USER)
            shutil.chown(self.socket_dir, PG_USER, PG_USER)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            PG_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        self.port = free_port()
        conf = _CONF.format(port=self.port, sock=self.socket_dir)
        with (self.data_dir / "postgresql.conf").open("a") as f:
            f.write(conf)

    def start(self) -> None:
        """Start the server (initialising the cluster on first use); return once it accepts."""
        if self._base is None:
            self._init()
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-W",  # don't let pg_ctl wait: readiness is polled below with our own deadline
            "start",
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            ready = self._run(
                str(self.bin_dir / "pg_isready"),
                *self._client_args(),
                "-d",
                "postgres",
                check=False,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                log = self.log_file.read_text() if self.log_file.exists() else ""
                raise PostgresServerError(f"PostgreSQL did not become ready:\n{log[-2000:]}")
            time.sleep(0.05)  # poll interval, not synchronisation

    def stop(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected); the data is kept."""
        if self._base is None or not (self.data_dir / "postmaster.pid").exists():
            return
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"
        )

    def _pids(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer, ...)."""
        pid_file = self.data_dir / "postmaster.pid"
        if self._base is None or not pid_file.exists():
            return []
        root = int(pid_file.read_text().split()[0])
        pids = [root]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == root:
                pids.append(int(stat.parent.name))
        return pids

    def pause(self) -> None:
        """SIGSTOP the whole server: connections stay open and nothing answers (a freeze)."""
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and delete its files."""
        if self._finalizer is not None:
            self._finalizer()
        self._base = None
        self._finalizer = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- databases --------------------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create a database and return its URL."""
        self._run(str(self.bin_dir / "createdb"), *self._client_args(), name)
        return self.url(name)

    def _client_args(self) -> list[str]:
        """Where the client tools connect: this server, as the superuser."""
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER]
