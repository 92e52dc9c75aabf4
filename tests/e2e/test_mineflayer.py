"""End to end with real Minecraft: a flying-squid world, real mineflayer bots, a real gateway.

Everything here is a real process: `scripts/mineflayer/server.js` (flying-squid 1.16.5, offline,
a flat world in memory, with a small HTTP API to place blocks), `scripts/mineflayer/bots.js`
(5 mineflayer bots, each bridged by `gateway-bridge.js`) and `python -m gateway serve`. The bots
print what mineflayer reports as JSON lines (`--json`) and take local commands on stdin
(`--stdin`), so the tests compare the game's view with what viewers and REST show.

The module shares one world, one fleet and one gateway; the restart test runs last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.harness import REPO, SECRET, GatewayProcess, Rest, free_port, token

NODE_DIR = REPO / "scripts" / "mineflayer"
BOTS = 5
PREFIX = "mf_"
NAMES = [f"{PREFIX}{i}" for i in range(1, BOTS + 1)]
POS_KEYS = ("x", "y", "z", "yaw", "pitch", "dim")

pytestmark = pytest.mark.timeout(300)


# ---- helpers -----------------------------------------------------------------------------------


def wrap(deg: float) -> float:
    """An angle in degrees wrapped into [-180, 180)."""
    return (deg + 180.0) % 360.0 - 180.0


def cell(pos: dict[str, Any]) -> tuple[int, int, int]:
    return math.floor(pos["x"]), math.floor(pos["y"] + 1e-3), math.floor(pos["z"])


async def until(what: str, check: Callable[[], Any], within: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `within` s."""
    end = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class NodeProcess:
    """A node script whose stdout JSON lines go to `on_record`; stderr is kept in a file."""

    def __init__(
        self,
        args: list[str],
        log: Path,
        on_record: Callable[[dict[str, Any]], None],
        stdin: bool = False,
    ) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            ["node", *args],
            cwd=NODE_DIR,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._on_record = on_record
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.strip()
            if not line.startswith(b"{"):
                continue  # flying-squid's own log lines
            try:
                record = json.loads(line)
            except ValueError:
                continue
            self._on_record(record)

    def write(self, record: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(record).encode() + b"\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._log.close()


class World:
    """flying-squid with its control API."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.control: int | None = None
        self._ready = threading.Event()
        self.node = NodeProcess(
            ["server.js", "--port", str(self.port), "--world", "flat"],
            tmp / "server.log",
            self._on_record,
        )
        if not self._ready.wait(60):
            err = self.node.stderr()
            self.node.stop()
            raise RuntimeError(f"flying-squid did not start:\n{err}")

    def _on_record(self, record: dict[str, Any]) -> None:
        if record.get("event") == "ready":
            self.control = record["control"]
            self._ready.set()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.control}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    async def fill(self, start: list[int], end: list[int], block: str = "stone") -> None:
        await asyncio.to_thread(
            self._call, "POST", "/fill", {"from": start, "to": end, "block": block}
        )

    async def teleport(self, name: str, x: float, y: float, z: float) -> None:
        await asyncio.to_thread(self._call, "POST", "/tp", {"name": name, "x": x, "y": y, "z": z})

    async def player(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await asyncio.to_thread(self._call, "GET", f"/player?name={name}")
        return result

    async def players(self) -> list[str]:
        result = await asyncio.to_thread(self._call, "GET", "/health")
        return list(result["players"])


class Fleet:
    """bots.js: every record it prints, the latest position per bot, and stdin commands."""

    def __init__(
        self,
        world: World,
        gateway_ws: str,
        tmp: Path,
        npcs: int = BOTS,
        prefix: str = PREFIX,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []
        self.pos: dict[str, dict[str, Any]] = {}
        self.link: dict[str, str] = {}
        self.forced: dict[str, int] = {}  # positions the server imposed, per bot
        self.seq = 0
        self.node = NodeProcess(
            [
                "bots.js",
                "--server",
                f"127.0.0.1:{world.port}",
                "--gateway",
                gateway_ws,
                "--npcs",
                str(npcs),
                "--prefix",
                prefix,
                *extra,
                "--secret",
                SECRET,
                "--json",
                "--stdin",
            ],
            tmp / "bots.log",
            self._on_record,
            stdin=True,
        )

    def _on_record(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.records.append(record)
            if record.get("kind") == "pos":
                self.pos[record["bot"]] = record
            elif record.get("kind") == "link":
                self.link[record["bot"]] = record["state"]
            elif record.get("kind") == "forced":
                self.forced[record["bot"]] = self.forced.get(record["bot"], 0) + 1

    def since(self, mark: int) -> list[dict[str, Any]]:
        with self.lock:
            return self.records[mark:]

    def mark(self) -> int:
        with self.lock:
            return len(self.records)

    def command(self, bot: str, action: str, args: dict[str, Any]) -> str:
        self.seq += 1
        cid = f"local-{self.seq}"
        self.node.write({"bot": bot, "id": cid, "action": action, "args": args})
        return cid

    def task_event(self, cid: str, mark: int = 0) -> dict[str, Any] | None:
        for r in self.since(mark):
            if (
                r.get("kind") == "event"
                and r["name"].startswith("task:")
                and r["data"].get("command") == cid
            ):
                return r
        return None

    async def run(self, bot: str, action: str, args: dict[str, Any], within: float = 60) -> Any:
        """A local command, to its task event; fails unless `task:completed`."""
        mark = self.mark()
        cid = self.command(bot, action, args)
        event = await until(f"{action} on {bot}", lambda: self.task_event(cid, mark), within)
        assert event["name"] == "task:completed", (event, self.node.stderr())
        return event

    def ended(self) -> list[str]:
        return [r["bot"] for r in self.since(0) if r.get("kind") == "end"]


class Viewer:
    """A raw `/ws/viewer` client merging the live state, and keeping every event."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.npcs: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, http_ws: str) -> Viewer:
        ws = await connect(
            http_ws + "/ws/viewer",
            additional_headers={"Authorization": f"Bearer {token('viewer', 'e2e')}"},
            subprotocols=["aicraft.v1.json"],  # type: ignore[list-item]
            max_size=None,
        )
        return cls(ws)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in self.ws:
                msg = orjson.loads(data)
                kind = msg.get("type")
                if kind == "snapshot":
                    self.npcs = {n["id"]: n for n in msg["npcs"]}
                elif kind == "positions":
                    for u in msg["updates"]:
                        self.npcs.setdefault(u["id"], {"id": u["id"]}).update(u)
                elif kind == "status":
                    self.npcs.setdefault(msg["id"], {"id": msg["id"]})["status"] = msg["status"]
                elif kind in ("joined", "left"):
                    self.npcs.setdefault(msg["id"], {"id": msg["id"]})["online"] = kind == "joined"
                elif kind == "event":
                    self.events.append(msg)

    def task_event(self, npc: str, cid: Any) -> dict[str, Any] | None:
        for e in self.events:
            data = e.get("data") or {}
            if e["npc"] == npc and e["name"].startswith("task:") and data.get("command") == cid:
                return e
        return None

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def same_position(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in POS_KEYS)


# ---- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """`npm ci` in scripts/mineflayer when its node_modules is missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: the mineflayer tests need Node.js 20+")
    if not (NODE_DIR / "node_modules" / "mineflayer").is_dir():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return NODE_DIR / "node_modules"


@pytest.fixture(scope="module")
def world(node_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("world"))
    try:
        yield w
    finally:
        w.node.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The gateway subprocess; `start()` again restarts it on the same port and data dir."""
    env = {
        "GATEWAY_DATA_DIR": str(tmp_path_factory.mktemp("gateway")),
        "GATEWAY_TICK_MS": "100",
        "GATEWAY_WORKERS": "1",
    }
    gw = GatewayProcess(env)
    gw.start()
    try:
        yield gw
    finally:
        gw.kill()


@pytest.fixture(scope="module")
def fleet(
    world: World, gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    f = Fleet(world, gateway.ws, tmp_path_factory.mktemp("bots"))
    try:
        # flying-squid finishes a login only on the client's first `look` or `flying` packet and
        # then imposes the login position again, undoing any look asked for before. A bot at rest
        # may never send either (its first went by before the server listened; a turn that falls
        # on mineflayer's once-a-second position update goes out as `position_look`), so each bot
        # turns until that second position has come: then a look sticks.
        nudges: dict[str, tuple[int, str]] = {}  # bot -> (record mark, command id) of its turn
        turns: dict[str, int] = {}
        end = time.monotonic() + 90
        while time.monotonic() < end:
            with f.lock:
                linked = [n for n in NAMES if f.link.get(n) == "connected" and n in f.pos]
                settled = [n for n in linked if f.forced.get(n, 0) >= 2]
            if len(settled) == len(NAMES) or f.node.proc.poll() is not None:
                break
            for n in set(linked) - set(settled):
                if n not in nudges or f.task_event(nudges[n][1], nudges[n][0]) is not None:
                    turns[n] = turns.get(n, 0) + 1  # a new angle each time: every turn moves
                    yaw = 45.0 if turns[n] % 2 else -45.0
                    nudges[n] = (f.mark(), f.command(n, "look", {"yaw": yaw, "pitch": 0.0}))
            time.sleep(0.05)
        with f.lock:
            missing = [
                n
                for n in NAMES
                if f.link.get(n) != "connected" or n not in f.pos or f.forced.get(n, 0) < 2
            ]
        seen = [r for r in f.since(0) if r.get("bot") in missing and r.get("kind") != "pos"]
        assert not missing, f"bots not in the game and linked: {missing}\n{seen}\n{f.node.stderr()}"
        yield f
    finally:
        f.node.stop()


@pytest.fixture
async def admin(gateway: GatewayProcess) -> Any:
    rest = Rest(gateway.http, token("admin", "e2e-admin"))
    try:
        yield rest
    finally:
        await rest.close()


@pytest.fixture
async def viewer(gateway: GatewayProcess) -> Any:
    v = await Viewer.open(gateway.ws)
    try:
        yield v
    finally:
        await v.close()


# ---- tests -------------------------------------------------------------------------------------


def test_bridge_converts_to_minecraft_angles(node_modules: Path) -> None:
    """mineflayer radians (yaw 0 = north, counter-clockwise; pitch up > 0) -> the contract's
    degrees (yaw 0 = south, 90 = west, in [-180, 180); pitch -90 = up)."""
    script = (
        "const b = require('./gateway-bridge');"
        "const P = Math.PI;"
        "const yaws = [P, P / 2, 0, -P / 2, 3 * P / 2, P + 1e-13];"
        "const pitches = [0, P / 2, -P / 2];"
        "console.log(JSON.stringify({"
        "  yaw: yaws.map(b.toContractYaw), pitch: pitches.map(b.toContractPitch),"
        "  back: [b.fromContractYaw(90), b.fromContractPitch(-90)]}))"
    )
    out = subprocess.run(
        ["node", "-e", script], cwd=NODE_DIR, capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout)
    # south, west, north (180 is written -180), east, east, south without float noise
    assert got["yaw"] == [0, 90, -180, -90, -90, 0]
    assert got["pitch"] == [0, -90, 90]
    assert got["back"] == pytest.approx([math.pi / 2, math.pi / 2])


LOOKS = [(-135.0, -60.0), (-45.0, -20.0), (30.0, 0.0), (90.0, 25.0), (170.0, 70.0)]


async def test_resting_positions_match_everywhere(
    world: World, fleet: Fleet, admin: Rest, viewer: Viewer
) -> None:
    """Each bot turns to its own yaw/pitch and rests: mineflayer, the Minecraft server, REST and a
    viewer all agree on where it is and where it looks, in the contract's units."""
    for name, (yaw, pitch) in zip(NAMES, LOOKS, strict=True):
        await fleet.run(name, "look", {"yaw": yaw, "pitch": pitch})

    async def everyone_agrees() -> bool:
        for name, (yaw, pitch) in zip(NAMES, LOOKS, strict=True):
            mine = fleet.pos[name]
            # the look has been applied (under load the command can land after a position)
            if abs(wrap(mine["yaw"] - yaw)) > 0.151 or abs(mine["pitch"] - pitch) > 0.151:
                return False
            status, rest = await admin.call("GET", f"/api/npcs/{name}")
            assert status == 200, rest
            seen = viewer.npcs.get(name, {})
            if not (same_position(mine, rest) and same_position(mine, seen)):
                return False
            # the bridge says "idle" only 400 ms after the last movement (no flicker)
            if seen.get("status") != "idle":
                return False
        return True

    await until(
        "REST and the viewer to show every bot at rest where mineflayer has it", everyone_agrees
    )

    for name, (yaw, pitch) in zip(NAMES, LOOKS, strict=True):
        mine = fleet.pos[name]
        # the contract's convention, from mineflayer's radians (yaw measured the other way)
        assert abs(wrap(mine["yaw"] - (180.0 - math.degrees(mine["raw"]["yaw"])))) < 1e-5
        assert abs(mine["pitch"] + math.degrees(mine["raw"]["pitch"])) < 1e-5
        # the look asked for, to mineflayer's mouse step (it snaps angles to 0.15 degrees)
        assert abs(wrap(mine["yaw"] - yaw)) <= 0.151 and abs(mine["pitch"] - pitch) <= 0.151
        assert mine["dim"] == "overworld"
        # the Minecraft server's own record (a byte: 1/256 of a turn) agrees
        server = await world.player(name)
        assert abs(wrap(server["yaw"] - mine["yaw"])) <= 360 / 256, (name, server, mine)
        assert abs(wrap(server["pitch"] - mine["pitch"])) <= 360 / 256, (name, server, mine)
        for k in ("x", "y", "z"):
            assert server[k] == pytest.approx(mine[k], abs=1e-6)
        assert viewer.npcs[name]["online"] is True
        assert viewer.npcs[name]["status"] == "idle"


async def test_rest_goto_walks_the_real_bot(fleet: Fleet, admin: Rest, viewer: Viewer) -> None:
    name = NAMES[0]
    start = cell(fleet.pos[name])
    goal = [start[0] + 5, start[1], start[2] - 3]
    status, body = await admin.call(
        "POST",
        f"/api/npcs/{name}/commands",
        {"action": "goto", "args": dict(zip("xyz", goal, strict=True))},
    )
    if status in (404, 405) and not isinstance(body, dict):
        pytest.skip("POST /api/npcs/{id}/commands is not in this gateway build yet")
    assert status == 202, body
    assert body["delivered"] is True
    cid = body["id"]

    event = await until("a viewer to see the goto finish", lambda: viewer.task_event(name, cid), 60)
    assert event["name"] == "task:completed", event
    assert event["data"]["task"] == "goto"
    # the real bot is in the goal cell, and REST converges to exactly where mineflayer has it
    assert list(cell(fleet.pos[name])) == goal

    async def rest_converged() -> bool:
        _, npc = await admin.call("GET", f"/api/npcs/{name}")
        return same_position(npc, fleet.pos[name])

    await until("REST to show the bot where it stopped", rest_converged)
    acked = [r for r in fleet.since(0) if r.get("kind") == "command" and r.get("id") == cid]
    assert acked and acked[0]["action"] == "goto"


async def test_gateway_planner_goto_over_a_step_and_a_drop(
    world: World, fleet: Fleet, admin: Rest, viewer: Viewer
) -> None:
    """`planner: gateway`: the bridge sends the loaded blocks as a bitset volume, the gateway's
    workers answer with a path, and the bot walks it: up two steps, down a two-block drop."""
    status, body = await admin.call(
        "POST",
        "/api/pathfind",
        {"start": [0, 1, 0], "goal": [1, 1, 0], "world": {"solid": [[0, 0, 0], [1, 0, 0]]}},
    )
    if status in (404, 405) and not isinstance(body, dict):
        pytest.skip("pathfinding (gateway/workers, POST /api/pathfind) is not in this build yet")
    assert status == 200 and body["ok"] is True, body

    name = NAMES[2]
    ground = cell(fleet.pos[name])[1]
    # away from where the bots spawn (within 12 blocks of the origin)
    await fleet.run(name, "goto", {"x": 30, "y": ground, "z": 0})
    # a wall too wide to walk around inside the volume the bridge sends (8 blocks of margin):
    # one block high at x=32, two at x=33, nothing at x=34 (a two-block drop)
    await world.fill([32, ground, -12], [32, ground, 12])
    await world.fill([33, ground, -12], [33, ground + 1, 12])

    mark = fleet.mark()
    goal = [36, ground, 0]
    args = {"x": goal[0], "y": goal[1], "z": goal[2], "planner": "gateway"}
    cid = fleet.command(name, "goto", args)
    event = await until("the planned goto to finish", lambda: fleet.task_event(cid, mark), 60)
    assert event["name"] == "task:completed", (event, fleet.node.stderr())
    assert event["data"]["planner"] == "gateway"
    assert list(cell(fleet.pos[name])) == goal

    path = next(r["path"] for r in fleet.since(mark) if r.get("kind") == "path")
    assert path[0] == [30, ground, 0] and path[-1] == goal
    assert max(p[1] for p in path) == ground + 2  # on top of the two-block wall
    heights = [r["y"] for r in fleet.since(mark) if r.get("kind") == "pos" and r["bot"] == name]
    assert max(heights) >= ground + 2  # the real bot climbed it
    # viewers saw the command's outcome through the gateway
    await until(
        "a viewer to see the task event",
        lambda: any(
            e["npc"] == name and e["name"] == "task:completed" and e["data"]["command"] == cid
            for e in viewer.events
        ),
    )


@pytest.fixture(scope="module")
def mappers(
    world: World, gateway: GatewayProcess, fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """Two more bots whose bridges stream the world (--stream-world)."""
    f = Fleet(world, gateway.ws, tmp_path_factory.mktemp("mappers"), 2, "map_", ("--stream-world",))
    try:
        end = time.monotonic() + 90
        names = ["map_1", "map_2"]
        while time.monotonic() < end:
            with f.lock:
                if all(f.link.get(n) == "connected" and n in f.pos for n in names):
                    break
            time.sleep(0.05)
        yield f
    finally:
        f.node.stop()


async def test_two_bots_map_the_way_for_a_path_without_a_world(
    world: World, mappers: Fleet, admin: Rest
) -> None:
    """§9, done when: two bots in different places stream the sections around them; a path
    from one's area to the other's, through both, is found on the gateway with no world in the
    request. The server loads a bot the chunks from 4 behind to 3 ahead of its own: at z = 200
    (far from where the others spawn) bot A at x = -150 sees x -224..-97, bot B at x = -50 sees
    -128..-1, so x = -200 only A can have reported and x = -20 only B."""
    a, b = "map_1", "map_2"
    ground = cell(mappers.pos[a])[1]
    await world.teleport(a, -150.5, ground, 200.5)
    await world.teleport(b, -50.5, ground, 200.5)
    request = {"start": [-200, ground, 200], "goal": [-20, ground, 200], "dim": "overworld"}

    async def found() -> Any:
        # While the bridges are still streaming, the way may be unknown or only a detour.
        status, body = await admin.call("POST", "/api/pathfind", request)
        assert status == 200, body
        return body if body["ok"] and body["cost"] == 180 else None  # flat: a straight walk

    try:
        result = await until("the model to hold the way from one area to the other", found, 120)
    except AssertionError:
        _, last = await admin.call("POST", "/api/pathfind", request)
        _, summary = await admin.call("GET", "/api/world/overworld")
        _, row = await admin.call("GET", "/api/world/overworld/heightmap?area=-230,200,10,200")
        known = "".join("." if h is None else "#" for h in row["heights"])
        raise AssertionError(f"last {last}\nmodel {summary}\nz=200 from x=-230: {known}") from None
    assert result["path"][0] == request["start"] and result["path"][-1] == request["goal"]
    status, heights = await admin.call(
        "GET", "/api/world/overworld/heightmap?area=-200,200,-20,200"
    )
    assert status == 200 and set(heights["heights"]) == {ground - 1}  # the flat ground's top


async def test_bots_reconnect_after_the_gateway_restarts(
    world: World, fleet: Fleet, gateway: GatewayProcess
) -> None:
    mark = fleet.mark()
    gateway.kill()
    await until(
        "every bot to notice the gateway is gone",
        lambda: (
            {
                r["bot"]
                for r in fleet.since(mark)
                if r.get("kind") == "link" and r["state"] == "disconnected"
            }
            == set(NAMES)
        ),
    )
    gateway.start()
    await until(
        "every bot to reconnect by itself",
        lambda: (
            {
                r["bot"]
                for r in fleet.since(mark)
                if r.get("kind") == "link" and r["state"] == "connected"
            }
            == set(NAMES)
        ),
        60,
    )
    viewer = await Viewer.open(gateway.ws)
    try:
        await until(
            "a new viewer to show every bot online where mineflayer has it",
            lambda: all(
                viewer.npcs.get(n, {}).get("online") is True
                and same_position(viewer.npcs[n], fleet.pos[n])
                for n in NAMES
            ),
        )
    finally:
        await viewer.close()
    # the bots never left the game
    assert fleet.ended() == []
    assert set(NAMES) <= set(await world.players())


def test_bridge_runs_each_command_id_once(node_modules: Path) -> None:
    """A command queued for an offline bot (§10) may reach it again after a reconnect: the
    bridge acks every copy but runs the command once. Pure logic, so the link is a stub."""
    script = (
        "const { GatewayLink } = require('./gateway-bridge');"
        "const link = Object.create(GatewayLink.prototype);"
        "link.seenCommands = new Set(); link.duplicateCommands = 0;"
        "const sent = [], ran = [];"
        "link.send = (m) => sent.push(m);"
        "link._emitReport = (r) => ran.push(r.id);"
        "link._taskEvent = () => {};"
        "for (const id of ['c1', 'c2', 'c1']) link._onCommand({ id, action: 'nope' }, true);"
        "console.log(JSON.stringify({ sent, ran, dup: link.duplicateCommands }))"
    )
    out = subprocess.run(
        ["node", "-e", script], cwd=NODE_DIR, capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout)
    assert [m["id"] for m in got["sent"]] == ["c1", "c2", "c1"]  # every copy acked
    assert got["ran"] == ["c1", "c2"] and got["dup"] == 1
