"""The command line (§13): migrate, token, configuration errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.auth import Role, verify_token
from gateway.config import load_or_create_secret
from tests.harness import REPO


def _gateway(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrate_applies_once(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    env = {"GATEWAY_DATA_DIR": str(tmp_path)}
    if backend == "postgres":
        env["GATEWAY_DATABASE_URL"] = request.getfixturevalue("pg_url")
    first = _gateway("migrate", env=env)
    assert first.returncode == 0 and "001_init" in first.stdout, first.stderr
    again = _gateway("migrate", env=env)
    assert again.returncode == 0 and "none pending" in again.stdout


def test_token_uses_the_data_dir_secret(tmp_path: Path) -> None:
    done = _gateway(
        "token", "--role", "viewer", "--sub", "map", env={"GATEWAY_DATA_DIR": str(tmp_path)}
    )
    assert done.returncode == 0
    secret_file = tmp_path / "secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    claims = verify_token(load_or_create_secret(tmp_path), done.stdout.strip())
    assert (claims.sub, claims.role) == ("map", Role.VIEWER)


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    done = _gateway("serve", env={"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_TICK_MS": "soon"})
    assert done.returncode == 2 and "GATEWAY_TICK_MS must be an integer" in done.stderr


def test_serve_refuses_a_short_secret(tmp_path: Path) -> None:
    done = _gateway(
        "serve", "--port", "1", env={"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_SECRET": "short"}
    )
    assert done.returncode != 0
    assert "at least 32 bytes" in done.stderr and "GATEWAY_SECRET" in done.stderr
    (tmp_path / "secret").write_text("")  # a file left empty by a crash mid-write
    done = _gateway("serve", "--port", "1", env={"GATEWAY_DATA_DIR": str(tmp_path)})
    assert done.returncode != 0 and "0-byte secret" in done.stderr


def test_a_redis_cluster_url_without_a_port_is_a_clear_error(tmp_path: Path) -> None:
    """A `redis+cluster://` seed node must be host:port: say so instead of a stack trace."""
    done = _gateway(
        "serve",
        "--port",
        "1",
        env={"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_REDIS_URL": "redis+cluster://h:1,h2"},
    )
    assert done.returncode == 2
    assert "GATEWAY_REDIS_URL" in done.stderr and "'h2' is not host:port" in done.stderr
    assert "Traceback" not in done.stderr
