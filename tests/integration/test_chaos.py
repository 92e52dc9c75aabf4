"""`make chaos`, short: two replicas behind nginx, throwaway PostgreSQL and Redis, simulated
bots and viewers, one round of every fault. The script is the test: it exits 0 only if nothing
accepted was lost and every viewer's final view equals the database."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness import REPO

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(600)]


def test_quick_chaos_loses_nothing_accepted() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/chaos.py", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    assert "nothing accepted was lost" in out
    for fault in ("PostgreSQL stop", "PostgreSQL freeze", "Redis SIGKILL", "replica SIGKILL"):
        assert fault in out
    assert "metrics LOST" not in out
