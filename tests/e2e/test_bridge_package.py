"""The Mineflayer bridge as people use it from their own bot project: a fresh npm project
installs it by path (as docs/mineflayer.md says), and the README's few lines attach a bot in a
real flying-squid world to a real gateway, which lists it online where the game has it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_mineflayer import NODE_DIR, World, node_modules  # noqa: F401 (fixture)
from tests.harness import GatewayProcess, Rest, token

pytestmark = pytest.mark.timeout(300)

BOT = """
const { attachGateway } = require('aicraft-mineflayer-bridge')
const bot = require('mineflayer').createBot({
  host: '127.0.0.1', port: Number(process.env.MC_PORT), username: 'pkg_bot', auth: 'offline'
})
bot.once('spawn', () => {
  const link = attachGateway(bot, { url: process.env.GATEWAY_URL, token: process.env.NPC_TOKEN })
  link.on('connected', () => console.log(JSON.stringify({ event: 'linked' })))
})
process.on('SIGTERM', () => process.exit(0))
"""


def _npm(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        ["npm", *args, "--no-audit", "--no-fund", "--loglevel=error", "--prefer-offline"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"npm {args} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def project(node_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A bot project of someone else's: the bridge installed from a path, mineflayer beside it."""
    root = tmp_path_factory.mktemp("my-bot")
    (root / "package.json").write_text(json.dumps({"name": "my-bot", "private": True}))
    _npm("install", "--install-links", str(NODE_DIR), "mineflayer@4.39.0", cwd=root)
    (root / "bot.js").write_text(BOT)
    return root


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.node.stop()


def test_the_package_carries_the_bridge_and_declares_what_it_needs(project: Path) -> None:
    installed = project / "node_modules" / "aicraft-mineflayer-bridge"
    assert installed.is_dir() and not installed.is_symlink()  # a copy: the clone may move
    manifest = json.loads((installed / "package.json").read_text())
    assert manifest["main"] == "gateway-bridge.js"
    assert set(manifest["dependencies"]) >= {"ws", "vec3"}
    assert set(manifest["peerDependencies"]) >= {"mineflayer", "mineflayer-pathfinder"}
    for dep in ("ws", "vec3", "mineflayer", "mineflayer-pathfinder"):
        assert (project / "node_modules" / dep / "package.json").exists(), dep
    assert not (installed / "server.js").exists()  # the demo world is not part of the package


async def test_a_bot_from_another_project_is_listed_online(
    project: Path, world: World, tmp_path: Path
) -> None:
    gw = GatewayProcess({"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_TICK_MS": "100"})
    gw.start()
    admin = Rest(gw.http, token("admin", "ops"))
    bot = await asyncio.create_subprocess_exec(
        "node",
        "bot.js",
        cwd=project,
        env={
            "PATH": os.environ["PATH"],
            "MC_PORT": str(world.port),
            "GATEWAY_URL": gw.ws,
            "NPC_TOKEN": token("npc", "pkg_bot"),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        npc: dict = {}
        for _ in range(600):  # poll with a deadline (60 s): join the world, link, send a position
            status, npc = await admin.call("GET", "/api/npcs/pkg_bot")
            if status == 200 and npc["online"] and npc["y"] is not None:
                break
            if bot.returncode is not None:
                _, err = await bot.communicate()
                pytest.fail(f"the bot exited:\n{err.decode(errors='replace')}")
            await asyncio.sleep(0.1)
        assert npc.get("online") is True, npc
        game = await world.player("pkg_bot")
        assert abs(npc["x"] - game["x"]) < 1 and abs(npc["z"] - game["z"]) < 1
        assert npc["y"] == pytest.approx(game["y"], abs=0.01)
    finally:
        if bot.returncode is None:
            bot.terminate()
        await asyncio.wait_for(bot.communicate(), 15)
        await admin.close()
        gw.terminate()
