"""The package as people install it: a wheel built from the sources, installed into a fresh
venv, run from another directory (no checkout beside it)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.client import BotClient
from tests.harness import SECRET, GatewayProcess, Rest, free_port, token
from tests.wheel import build_wheel, run, venv_with


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel, the server extra and their locked dependencies; returns its
    bin/."""
    root = tmp_path_factory.mktemp("wheel")
    return venv_with(root, f"{build_wheel(root)}[server]")


def _elsewhere(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "GATEWAY_SECRET": SECRET,
        "PATH": "/usr/bin:/bin",
    }
    return cwd, env


def test_migrate_from_another_directory_creates_the_tables(installed: Path, tmp_path: Path) -> None:
    cwd, env = _elsewhere(tmp_path)
    out = run(installed / "aicraft-gateway", "migrate", cwd=cwd, env=env)
    assert "001_init" in out
    again = run(installed / "aicraft-gateway", "migrate", cwd=cwd, env=env)
    assert "none pending" in again


async def test_serve_from_another_directory_lists_a_connected_bot(
    installed: Path, tmp_path: Path
) -> None:
    cwd, env = _elsewhere(tmp_path)
    gw = GatewayProcess(env, command=[str(installed / "aicraft-gateway")], cwd=cwd)
    gw.start()
    admin = Rest(gw.http, token("admin", "ops"))
    try:
        status, spec = await admin.call("GET", "/api/openapi.yaml")
        assert status == 200 and "openapi:" in spec
        async with BotClient(gw.ws, token("npc", "miner_1")) as bot:
            await asyncio.wait_for(bot.wait_connected(), 10)
            await bot.send_position(1, 64, 2)
            listed: list[dict] = []
            for _ in range(100):  # poll with a deadline: the bot registers as it connects
                status, body = await admin.call("GET", "/api/npcs?online=true")
                assert status == 200, body
                listed = [n["id"] for n in body["npcs"]]
                if "miner_1" in listed:
                    break
                await asyncio.sleep(0.1)
            assert "miner_1" in listed
    finally:
        await admin.close()
        code, output = gw.terminate()
    assert code == 0, output
    assert "no such table" not in output


def test_a_broken_install_without_migrations_fails_loudly(installed: Path, tmp_path: Path) -> None:
    # A copy of the installed venv with its bundled migrations removed.
    venv = tmp_path / "venv"
    shutil.copytree(installed.parent, venv, symlinks=True)
    (bundled,) = venv.glob("lib/python*/site-packages/gateway/_data/schema")
    shutil.rmtree(bundled)
    cwd, env = _elsewhere(tmp_path)
    for args in (["migrate"], ["serve", "--port", str(free_port())]):
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "gateway", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "no migrations" in done.stderr, done.stderr
