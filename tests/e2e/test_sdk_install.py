"""The SDK as a bot author installs it: `pip install aicraft-gateway`, without the server extra.

A fresh venv holds the wheel and the base dependencies only. There `gateway.client` imports
without any of the server's packages, and a bot and a viewer talk to a real gateway (run from
the dev venv); the console script says what to install instead of failing with a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.__main__ import SERVER_MODULES
from tests.harness import GatewayProcess, token
from tests.wheel import build_wheel, run, venv_with

pytestmark = [
    pytest.mark.timeout(300),
    # The one reason to skip: this Python cannot make a venv (Debian without python3-venv).
    pytest.mark.skipif(importlib.util.find_spec("ensurepip") is None, reason="no ensurepip"),
]

BOT = """
import asyncio, json, os, sys
from gateway.client import BotClient, ViewerClient

SERVER = set(sys.argv[1:])


async def main() -> None:
    url = os.environ["GATEWAY_URL"]
    async with (
        ViewerClient(url, os.environ["VIEWER_TOKEN"]) as viewer,
        BotClient(url, os.environ["NPC_TOKEN"], encoding="msgpack") as bot,
    ):
        await bot.send_position(1, 64, 2)
        seen = await viewer.wait_for_npc("sdk_bot", x=1)
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in SERVER)
    print(json.dumps({"welcome": bot.welcome, "seen": seen, "loaded": loaded}))


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and its base (SDK) dependencies only; returns its bin/."""
    root = tmp_path_factory.mktemp("sdk")
    return venv_with(root, build_wheel(root))


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess({"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_TICK_MS": "100"})
    gw.start()
    try:
        yield gw
    finally:
        gw.kill()


def test_the_sdk_venv_has_none_of_the_servers_packages(sdk: Path) -> None:
    have = run(sdk / "python", "-m", "pip", "list", "--format=json", cwd=sdk)
    names = {p["name"].lower().replace("-", "_") for p in json.loads(have)}
    assert names.isdisjoint(SERVER_MODULES), names & set(SERVER_MODULES)


def test_a_bot_and_a_viewer_run_on_the_sdk_alone(
    sdk: Path, gateway: GatewayProcess, tmp_path: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "GATEWAY_URL": gateway.ws,
        "NPC_TOKEN": token("npc", "sdk_bot"),
        "VIEWER_TOKEN": token("viewer", "sdk_viewer"),
    }
    # From another directory, so the checkout's gateway/ is not on the path: the wheel's is.
    out = run(sdk / "python", "-c", BOT, *SERVER_MODULES, cwd=tmp_path, env=env)
    result = json.loads(out)
    assert result["loaded"] == []
    assert result["welcome"]["type"] == "welcome" and result["welcome"]["npc"] == "sdk_bot"
    assert result["seen"]["x"] == 1 and result["seen"]["z"] == 2


def test_the_console_script_says_to_install_the_server_extra(sdk: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(sdk / "aicraft-gateway"), "serve"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert "pip install 'aicraft-gateway[server]'" in line, done.stderr
