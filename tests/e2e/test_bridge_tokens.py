"""The Mineflayer bridge's token provider (§2) against a real in-process gateway.

The bridge (`scripts/mineflayer/gateway-bridge.js`) runs in a real Node.js process; only the
Minecraft side is a stand-in (an object with a position that emits no game events), since
what is tested is the link to the gateway, not the game.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness import REPO, SECRET, RunningGateway, gateway_settings, running_gateway

NODE_DIR = REPO / "scripts" / "mineflayer"
TTL_S = 2  # seconds each token the provider hands out lives
RUN_S = 3 * TTL_S + 1  # three token lifetimes

SCRIPT = """
const { EventEmitter } = require('events')
const jwt = require('jsonwebtoken')
const { Vec3 } = require('vec3')
const { GatewayLink } = require('./gateway-bridge')
const [url, secret, ttl, runMs] = process.argv.slice(1)
const bot = new EventEmitter()
bot.entity = { position: new Vec3(1, 64, 2), yaw: 0, pitch: 0, velocity: new Vec3(0, 0, 0) }
bot.game = { dimension: 'overworld' }
let calls = 0
const token = () => {
  calls += 1
  return jwt.sign({ sub: 'mf_refresh', role: 'npc' }, secret,
                  { algorithm: 'HS256', expiresIn: Number(ttl) })
}
const link = new GatewayLink(bot, { url, token })
const log = (r) => console.log(JSON.stringify(r))
link.on('connected', () => log({ e: 'connected' }))
link.on('disconnected', (code) => log({ e: 'disconnected', code }))
link.on('fatal', (err) => log({ e: 'fatal', why: String(err) }))
setTimeout(() => {
  log({ e: 'end', connected: link.connected, calls, refreshes: link.refreshes || 0 })
  link.close()
  process.exit(0)
}, Number(runMs))
"""


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "ws").is_dir():
        pytest.skip("Node.js and scripts/mineflayer/node_modules are needed (make test installs)")
    async with running_gateway(gateway_settings(tmp_path)) as running:
        yield running


async def test_bridge_refreshes_in_place_and_never_drops(gw: RunningGateway) -> None:
    proc = await asyncio.create_subprocess_exec(
        "node",
        "-e",
        SCRIPT,
        gw.ws,
        SECRET,
        str(TTL_S),
        str(RUN_S * 1000),
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), RUN_S + 30)
    records = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    events = [r["e"] for r in records]
    assert events == ["connected", "end"], (records, err.decode()[-2000:])
    end = records[-1]
    assert end["connected"] is True
    assert end["refreshes"] >= 3 and end["calls"] >= 4, end
