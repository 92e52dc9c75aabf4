"""A bot simulator: N plausible bots on procedural terrain, connected through the SDK.

The core is pure and clock-free, so it is tested without sockets:

- :class:`Terrain` — a heightmap from a seed (value noise plus rocky terraces whose cliffs
  cannot be climbed), the same heights for the same seed on every run and machine;
- :func:`legal_step` / :func:`find_path` — 4-neighbour moves that climb at most 1 block and
  drop at most 3 (the contract's pathfinding rules on a heightmap);
- :class:`SimNpc` — one bot's behaviour, advanced by :meth:`SimNpc.tick` (one call per 1/5 s)
  and :meth:`SimNpc.command`; both return the messages the bot sends.

:class:`Simulation` / :func:`run_simulation` connect those bots with `gateway.client.BotClient`,
register their roles over REST first (an admin token), and answer operator commands:
`goto {x,y,z}` (then `task:completed`, or `task:failed` if unreachable), `stop`, `resume`,
`say {text}`.

    python -m gateway simulate --url ws://127.0.0.1:8080 --npcs 50
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import logging
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import aiohttp

from gateway.auth import issue_token
from gateway.client import BotClient

log = logging.getLogger(__name__)

Message = dict[str, Any]
Cell = tuple[int, int]  # (x, z); the standing y comes from the terrain
TokenFactory = Callable[[str, str], str]  # (role, sub) -> bearer token

ROLES = ("miner", "builder", "scout", "farmer", "guard")
WORK_STATUS = {
    "miner": "mining",
    "builder": "building",
    "scout": "scouting",
    "farmer": "farming",
    "guard": "guarding",
}
TICK_HZ = 5.0  # one walker step and (while moving) one position per tick
MAX_UP, MAX_DOWN = 1, 3
SEA_LEVEL = 64
NAMES = (
    "Ada", "Bram", "Cleo", "Dax", "Edda", "Finn", "Gus", "Hale", "Ivo", "Juno", "Kit", "Lark",
    "Mira", "Nox", "Oda", "Pim", "Quin", "Rhea", "Sol", "Tove", "Ulla", "Vik", "Wren", "Yara",
)  # fmt: skip


# -- terrain -------------------------------------------------------------------------------------
_MASK = (1 << 64) - 1


def _mix(seed: int, x: int, z: int) -> int:
    """A 64-bit hash of a lattice point (splitmix64 finaliser): stable across runs and hosts,
    unlike `hash()`."""
    h = (seed * 0x9E3779B97F4A7C15 + x * 0xBF58476D1CE4E5B9 + z * 0x94D049BB133111EB) & _MASK
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & _MASK
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & _MASK
    return h ^ (h >> 31)


def _noise(seed: int, x: int, z: int, period: int) -> float:
    """Value noise in [0, 1): smoothstep interpolation of hashed lattice values."""
    gx, fx = divmod(x, period)
    gz, fz = divmod(z, period)
    tx, tz = fx / period, fz / period
    tx, tz = tx * tx * (3 - 2 * tx), tz * tz * (3 - 2 * tz)
    scale = 1.0 / (1 << 64)
    a = _mix(seed, gx, gz) * scale
    b = _mix(seed, gx + 1, gz) * scale
    c = _mix(seed, gx, gz + 1) * scale
    d = _mix(seed, gx + 1, gz + 1) * scale
    top = a + (b - a) * tx
    bottom = c + (d - c) * tx
    return top + (bottom - top) * tz


class Terrain:
    """An endless heightmap: `height(x, z)` is the y of the top solid block of column (x, z).

    Rolling hills everywhere; in rocky regions heights snap to 5-block terraces, so there are
    cliffs a walker can neither climb (> 1 up) nor jump down (> 3 down) and must go around.
    """

    def __init__(self, seed: int, cache_size: int = 1 << 18) -> None:
        self.seed = seed
        # Pathfinding asks for the same columns many times; the noise is the costly part.
        self.height: Callable[[int, int], int] = lru_cache(maxsize=cache_size)(self._height)

    def _height(self, x: int, z: int) -> int:
        s = self.seed
        hills = (
            0.55 * _noise(s, x, z, 64)
            + 0.30 * _noise(s + 1, x, z, 24)
            + 0.15 * _noise(s + 2, x, z, 8)
        )
        h = SEA_LEVEL + round((hills - 0.5) * 36)
        if _noise(s + 3, x, z, 96) > 0.62:
            h = (h // 5) * 5 + 2
        return h

    def standing_y(self, x: int, z: int) -> int:
        """The y of a bot's feet standing on column (x, z)."""
        return self.height(x, z) + 1


def terrain_section(terrain: Terrain, cx: int, cy: int, cz: int) -> bytes:
    """The 512-byte solid bitset of one 16x16x16 section (§9): a block is solid
    up to and including its column's height."""
    import numpy as np

    heights = np.array(
        [[terrain.height(cx * 16 + x, cz * 16 + z) for x in range(16)] for z in range(16)]
    )  # (z, x)
    ys = np.arange(cy * 16, cy * 16 + 16).reshape(16, 1, 1)
    solid = (ys <= heights[np.newaxis, :, :]).astype(np.uint8)  # (y, z, x)
    return np.packbits(solid.reshape(-1), bitorder="little").tobytes()


def sections_near(x: int, y: int, z: int, radius: int = 2) -> list[tuple[int, int, int]]:
    """Section keys around a bot, nearest first: `radius` chunks around, a section above and
    below its own."""
    cx, cy, cz = x >> 4, y >> 4, z >> 4
    keys = [
        (cx + dx, cy + dy, cz + dz)
        for dx in range(-radius, radius + 1)
        for dz in range(-radius, radius + 1)
        for dy in (-1, 0, 1)
    ]
    keys.sort(key=lambda k: abs(k[0] - cx) + abs(k[2] - cz) + abs(k[1] - cy))
    return keys


def legal_step(terrain: Terrain, a: Cell, b: Cell) -> bool:
    """Whether a bot standing on column `a` may step onto column `b`: a 4-neighbour move that
    climbs at most `MAX_UP` and drops at most `MAX_DOWN` blocks."""
    if abs(a[0] - b[0]) + abs(a[1] - b[1]) != 1:
        return False
    dy = terrain.height(*b) - terrain.height(*a)
    return -MAX_DOWN <= dy <= MAX_UP


def neighbours(terrain: Terrain, cell: Cell) -> list[Cell]:
    """The columns reachable from `cell` in one legal step."""
    x, z = cell
    height = terrain.height
    here = height(x, z)
    out = []
    for c in ((x + 1, z), (x - 1, z), (x, z + 1), (x, z - 1)):
        if -MAX_DOWN <= height(*c) - here <= MAX_UP:  # the hot loop: legal_step, inlined
            out.append(c)
    return out


def find_path(
    terrain: Terrain, start: Cell, goal: Cell, max_nodes: int = 20_000
) -> tuple[list[Cell], bool]:
    """A* over legal steps (cost 1 a step, 2 for a climb): `(path, reached)`.

    `path` starts after `start` and ends at `goal` when `reached`; otherwise (unreachable or
    over `max_nodes` expansions) it ends at the expanded column closest to `goal`, so a bot can
    still head that way.
    """
    if start == goal:
        return [], True

    def h(c: Cell) -> int:
        return abs(c[0] - goal[0]) + abs(c[1] - goal[1])

    came: dict[Cell, Cell] = {}
    cost: dict[Cell, int] = {start: 0}
    frontier: list[tuple[int, int, Cell]] = [(h(start), 0, start)]
    best, best_h = start, h(start)
    expanded = 0
    while frontier and expanded < max_nodes:
        _, g, cell = heapq.heappop(frontier)
        if g > cost[cell]:
            continue  # a stale entry: a cheaper way here was found later
        if cell == goal:
            best = cell
            break
        expanded += 1
        if h(cell) < best_h:
            best, best_h = cell, h(cell)
        here = terrain.height(*cell)
        for nxt in neighbours(terrain, cell):
            step = 2 if terrain.height(*nxt) > here else 1
            ng = g + step
            if ng < cost.get(nxt, 1 << 30):
                cost[nxt] = ng
                came[nxt] = cell
                heapq.heappush(frontier, (ng + h(nxt), ng, nxt))
    path: list[Cell] = []
    cell = best
    while cell != start:
        path.append(cell)
        cell = came[cell]
    path.reverse()
    return path, best == goal


# -- one bot's behaviour -------------------------------------------------------------------------
@dataclass
class SimNpc:
    """One simulated bot. `tick()` advances it by one step (1/`TICK_HZ` s) and `command()`
    applies an operator command; both return the messages to send, in order.

    Phases: `idle` (waiting), `walking` (to a spot of its own choosing), `working` (its role's
    activity, ending in `task:completed` or `task:failed`), `goto` (an operator's order) and
    `held` (after `stop`, until the next command).
    """

    npc_id: str
    name: str
    role: str
    terrain: Terrain
    rng: random.Random
    x: int
    z: int
    dim: str = "overworld"
    phase: str = "idle"
    status: str = "idle"
    timer: int = 0
    path: deque[Cell] = field(default_factory=deque)
    order: Message | None = None  # the goto command being carried out
    yaw: float = 0.0
    health: float = 20.0
    food: float = 20.0
    ore: int = 0
    ticks: int = 0
    steps: int = 0
    home: Cell = (0, 0)

    def __post_init__(self) -> None:
        self.home = (self.x, self.z)
        self.timer = self.rng.randrange(1, 10)
        self._metric_phase = self.rng.randrange(25)

    @property
    def y(self) -> int:
        return self.terrain.standing_y(self.x, self.z)

    def position(self) -> Message:
        return {
            "type": "pos",
            "x": self.x + 0.5,
            "y": self.y,
            "z": self.z + 0.5,
            "yaw": self.yaw,
            "pitch": 0.0,
            "dim": self.dim,
        }

    def start(self) -> list[Message]:
        """What a bot says when it first comes up: where it is and what it does."""
        return [self._set_status("idle"), self.position()]

    def tick(self) -> list[Message]:
        self.ticks += 1
        out: list[Message] = []
        if self.phase in ("walking", "goto"):
            out += self._walk()
        elif self.phase == "working":
            self.timer -= 1
            if self.timer <= 0:
                out += self._finish_work()
            elif self.ticks % 5 == 0:
                self.yaw = (self.yaw + self.rng.uniform(-60, 60)) % 360  # looks around
                out.append(self.position())
        elif self.phase == "idle":
            self.timer -= 1
            if self.timer <= 0:
                out += self._choose_walk()
        if (self.ticks + self._metric_phase) % 25 == 0:  # every 5 s, staggered across bots
            out += self._metrics()
        return out

    def command(self, action: str, args: Message | None, command_id: Any = None) -> list[Message]:
        args = args if isinstance(args, dict) else {}
        out: list[Message] = []
        if action == "goto":
            coords: list[Any] = [args.get(k) for k in ("x", "y", "z")]
            nums = [float(v) for v in coords if type(v) in (int, float)]  # no bools, no strings
            if len(nums) != 3 or not all(math.isfinite(v) for v in nums):
                return [_event("task:failed", task="goto", command=command_id, reason="bad_args")]
            out += self._abandon_order("replaced")
            goal = (math.floor(nums[0]), math.floor(nums[2]))
            path, reached = find_path(self.terrain, (self.x, self.z), goal, max_nodes=20_000)
            self.order = {"command": command_id, "goal": goal, "reachable": reached}
            self.path = deque(path)
            self.phase = "goto"
            out.append(self._set_status("walking"))
            if not self.path:
                out += self._arrive()
        elif action == "stop":
            out += self._abandon_order("stopped")
            self.path.clear()
            self.phase = "held"
            out.append(self._set_status("idle"))
        elif action == "resume":
            out += self._abandon_order("resumed")
            self.phase, self.timer = "idle", 1
        elif action == "say":
            text = str(args.get("text", ""))[:256]
            out.append(_event("chat", text=text, command=command_id))
        else:
            out.append(_event("command:rejected", action=action, command=command_id))
        return out

    # -- phases ------------------------------------------------------------------------------
    def _set_status(self, status: str) -> Message:
        self.status = status
        return {"type": "status", "status": status}

    def _choose_walk(self) -> list[Message]:
        r = self.rng
        if self.role == "scout":
            radius, centre = r.randint(24, 64), (self.x, self.z)
        elif self.role == "guard":
            radius, centre = r.randint(6, 14), self.home  # patrols around its post
        else:
            radius, centre = r.randint(4, 20), self.home
        angle = r.uniform(0, 2 * math.pi)
        goal = (
            centre[0] + round(radius * math.cos(angle)),
            centre[1] + round(radius * math.sin(angle)),
        )
        path, _ = find_path(self.terrain, (self.x, self.z), goal, max_nodes=1_500)
        if not path:
            self.timer = r.randint(3, 10)  # boxed in this way: try another spot soon
            return []
        self.path = deque(path)
        self.phase = "walking"
        return [self._set_status("walking")]

    def _walk(self) -> list[Message]:
        if not self.path:
            return self._arrive()
        nxt = self.path.popleft()
        if not legal_step(self.terrain, (self.x, self.z), nxt):
            # Never happens with paths from find_path; a guard against future edits.
            self.path.clear()
            return self._arrive()
        dx, dz = nxt[0] - self.x, nxt[1] - self.z
        self.x, self.z = nxt
        self.steps += 1
        self.yaw = math.degrees(math.atan2(-dx, dz)) % 360  # Minecraft: 0 = +z, 90 = -x
        self.food = max(0.0, self.food - 0.01)
        out = [self.position()]
        if not self.path:
            out += self._arrive()
        return out

    def _arrive(self) -> list[Message]:
        if self.phase == "goto" and self.order is not None:
            order, self.order = self.order, None
            done = order["goal"] == (self.x, self.z)
            self.phase, self.timer = "held", 0
            here = {"x": self.x + 0.5, "y": self.y, "z": self.z + 0.5}
            ev = (
                _event("task:completed", task="goto", command=order["command"], **here)
                if done
                else _event(
                    "task:failed",
                    task="goto",
                    command=order["command"],
                    reason="unreachable",
                    **here,
                )
            )
            return [self._set_status("idle"), ev]
        self.phase = "working"
        self.timer = self.rng.randint(10, 40)
        return [self._set_status(WORK_STATUS.get(self.role, "working"))]

    def _finish_work(self) -> list[Message]:
        task = WORK_STATUS.get(self.role, "working")
        self.phase, self.timer = "idle", self.rng.randint(3, 15)
        out = [self._set_status("idle")]
        if self.rng.random() < 0.85:
            data: Message = {"task": task}
            if self.role == "miner":
                found = self.rng.randint(1, 6)
                self.ore += found
                data["ore"] = found
            out.append(_event("task:completed", **data))
        else:
            reason = self.rng.choice(("blocked", "no_tool", "interrupted", "hostile_mob"))
            if reason == "hostile_mob":
                self.health = max(1.0, self.health - self.rng.randint(2, 8))
            out.append(_event("task:failed", task=task, reason=reason))
        return out

    def _abandon_order(self, reason: str) -> list[Message]:
        if self.order is None:
            return []
        order, self.order = self.order, None
        return [_event("task:failed", task="goto", command=order["command"], reason=reason)]

    def _metrics(self) -> list[Message]:
        if self.food < 8:
            self.food = 20.0  # eats
        if self.health < 20:
            self.health = min(20.0, self.health + 1)
        return [
            {"type": "metric", "name": "health", "value": self.health},
            {"type": "metric", "name": "food", "value": round(self.food, 2)},
            {"type": "metric", "name": "ore", "value": self.ore},
        ]


def _event(name: str, **data: Any) -> Message:
    return {"type": "event", "name": name, "data": {k: v for k, v in data.items() if v is not None}}


def make_npcs(
    count: int, *, seed: int = 1, prefix: str = "sim", nether_share: float = 0.1
) -> list[SimNpc]:
    """`count` bots, roles in turn, spread over a disc that grows with the fleet; about
    `nether_share` of them in `the_nether` (its own terrain)."""
    rng = random.Random(seed)
    worlds = {"overworld": Terrain(seed), "the_nether": Terrain(seed + 7919)}
    radius = 12 * math.sqrt(max(count, 1)) + 16
    npcs = []
    for i in range(count):
        role = ROLES[i % len(ROLES)]
        dim = "the_nether" if rng.random() < nether_share else "overworld"
        angle, dist = rng.uniform(0, 2 * math.pi), radius * math.sqrt(rng.random())
        x, z = round(dist * math.cos(angle)), round(dist * math.sin(angle))
        npcs.append(
            SimNpc(
                npc_id=f"{prefix}-{i + 1:04d}",
                name=f"{NAMES[i % len(NAMES)]} {i + 1}",
                role=role,
                terrain=worlds[dim],
                rng=random.Random(rng.getrandbits(64)),
                x=x,
                z=z,
                dim=dim,
            )
        )
    return npcs


# -- running them against a gateway --------------------------------------------------------------
def token_factory(secret_or_factory: str | TokenFactory) -> TokenFactory:
    """A factory minting tokens with the gateway's secret, or the given factory as is."""
    if callable(secret_or_factory):
        return secret_or_factory
    secret = secret_or_factory
    return lambda role, sub: issue_token(secret, role, sub)


def http_base(url: str) -> str:
    """`ws://h:p[/…]` → `http://h:p` (and wss → https)."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{'https' if scheme in ('wss', 'https') else 'http'}://{host}"


async def register(
    url: str,
    admin_token: str,
    npcs: Sequence[SimNpc],
    *,
    concurrency: int = 8,
    on_ready: Callable[[SimNpc], Awaitable[None]] | None = None,
) -> None:
    """Create each NPC with its name and role over REST (or update an existing one's), so
    viewers see roles rather than `unknown`; then `await on_ready(npc)` for it.

    NPCs already registered as wanted cost no write (the listing is a read), and writes
    throttled by the gateway (429) are retried after its `Retry-After`, so large fleets and
    restarts register at whatever pace the gateway allows.
    """
    base = http_base(url)
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin_token}"}) as http:
        existing: dict[str, tuple[Any, Any]] = {}
        params = {"limit": "500"}
        while True:
            async with http.get(f"{base}/api/npcs", params=params) as resp:
                resp.raise_for_status()
                page = await resp.json()
            existing.update((m["id"], (m.get("name"), m.get("role"))) for m in page["npcs"])
            if not page.get("next_cursor"):
                break
            params = {"limit": "500", "cursor": page["next_cursor"]}

        async def one(npc: SimNpc) -> None:
            have = existing.get(npc.npc_id)
            async with gate:
                if have is None:
                    body = {"id": npc.npc_id, "name": npc.name, "role": npc.role, "status": "idle"}
                    created = await _write(http, "POST", f"{base}/api/npcs", body) != 409
                    stale = not created  # registered meanwhile (by its bot): set name and role
                else:
                    stale = have != (npc.name, npc.role)
                if stale:
                    patch = {"name": npc.name, "role": npc.role}
                    await _write(http, "PATCH", f"{base}/api/npcs/{npc.npc_id}", patch)
            if on_ready is not None:
                await on_ready(npc)

        await asyncio.gather(*(one(npc) for npc in npcs))


async def _write(http: aiohttp.ClientSession, method: str, url: str, body: Message) -> int:
    """One REST write; waits out 429s as the gateway asks; raises on other errors but 409."""
    for _ in range(120):
        async with http.request(method, url, json=body) as resp:
            if resp.status == 429:
                retry_after = resp.headers.get("Retry-After", "1")
            else:
                if resp.status >= 400 and resp.status != 409:
                    resp.raise_for_status()
                return resp.status
        await asyncio.sleep(float(retry_after) if retry_after.isdigit() else 1.0)
    raise RuntimeError(f"{method} {url}: still throttled after 120 tries")


class Simulation:
    """Simulated bots connected to a gateway: `async with Simulation(...) as sim: ...`.

    Each bot runs its own paced loop (staggered, `hz` ticks a second) and sends what its
    `SimNpc` says through a `BotClient`, which reconnects by itself.
    """

    def __init__(
        self,
        url: str,
        tokens: str | TokenFactory,
        npcs: int | Sequence[SimNpc],
        *,
        seed: int = 1,
        prefix: str = "sim",
        hz: float = TICK_HZ,
        nether_share: float = 0.1,
        encoding: str = "msgpack",
        stream_world: bool = False,
    ) -> None:
        self.url = url
        # The shared world model (§9): each bot reports one section of the terrain around it
        # per tick, nearest first; the fleet reports each section once (the terrain never
        # changes).
        self.stream_world = stream_world
        self.reported: set[tuple[str, int, int, int]] = set()
        self.sections_sent = 0
        self.tokens = token_factory(tokens)
        self.npcs = (
            make_npcs(npcs, seed=seed, prefix=prefix, nether_share=nether_share)
            if isinstance(npcs, int)
            else list(npcs)
        )
        self.by_id = {npc.npc_id: npc for npc in self.npcs}
        self.period = 1.0 / hz
        self.encoding = encoding
        self.clients: dict[str, BotClient] = {}
        self.messages_sent = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, connect_timeout: float | None = 30.0) -> None:
        """Register the NPCs and start each bot as soon as it is registered; then wait up to
        `connect_timeout` s until every bot is connected (None: let them connect in the
        background)."""
        index = {npc.npc_id: i for i, npc in enumerate(self.npcs)}

        async def launch(npc: SimNpc) -> None:
            client = BotClient(
                self.url,
                self.tokens("npc", npc.npc_id),
                encoding=self.encoding,
                on_command=self._command_handler(npc),
            )
            self.clients[npc.npc_id] = client
            await client.start(timeout=None)
            # Spread the bots' sends evenly over a tick rather than all at once.
            offset = self.period * index[npc.npc_id] / max(len(self.npcs), 1)
            self._tasks.append(asyncio.create_task(self._drive(npc, offset), name=npc.npc_id))

        await register(self.url, self.tokens("admin", "simulator"), self.npcs, on_ready=launch)
        if connect_timeout is not None:
            async with asyncio.timeout(connect_timeout):
                await asyncio.gather(*(c.wait_connected() for c in self.clients.values()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await asyncio.gather(*(c.close() for c in self.clients.values()), return_exceptions=True)

    async def __aenter__(self) -> Simulation:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send(self, npc: SimNpc, messages: Sequence[Message]) -> None:
        client = self.clients[npc.npc_id]
        for msg in messages:
            kind = msg["type"]
            if kind == "pos":
                await client.send_position(
                    msg["x"], msg["y"], msg["z"], msg["yaw"], msg["pitch"], msg["dim"]
                )
            elif kind == "status":
                await client.send_status(msg["status"])
            elif kind == "metric":
                await client.send_metric(msg["name"], msg["value"])
            elif kind == "event":
                await client.send_event(msg["name"], msg.get("data"))
            self.messages_sent += 1

    def _command_handler(self, npc: SimNpc) -> Callable[[Message], Any]:
        async def handle(msg: Message) -> None:
            await self.send(
                npc, npc.command(str(msg.get("action")), msg.get("args"), msg.get("id"))
            )

        return handle

    async def _drive(self, npc: SimNpc, offset: float) -> None:
        loop = asyncio.get_running_loop()
        await self.send(npc, npc.start())
        due = loop.time() + offset
        while True:
            # Pacing, not synchronisation: a bot moves at a fixed rate of steps per second.
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = max(due + self.period, loop.time() - self.period)  # never bursts to catch up
            try:
                await self.send(npc, npc.tick())
                if self.stream_world:
                    await self._report_section(npc)
            except Exception:  # one bot's bad step must not stop the fleet
                log.exception("simulated bot %s failed a tick", npc.npc_id)

    async def _report_section(self, npc: SimNpc) -> None:
        for key in sections_near(npc.x, npc.y, npc.z):
            if (npc.dim, *key) in self.reported:
                continue
            solid = terrain_section(npc.terrain, *key)
            msg = {"type": "chunk", "dim": npc.dim, "origin": [k * 16 for k in key]}
            # bytes in msgpack, base64 in JSON (§9)
            msg["solid"] = solid if self.encoding == "msgpack" else base64.b64encode(solid).decode()
            if await self.clients[npc.npc_id].send(msg):
                self.reported.add((npc.dim, *key))
                self.sections_sent += 1
            return


async def run_simulation(
    url: str,
    secret_or_token_factory: str | TokenFactory,
    npcs: int,
    *,
    seed: int = 1,
    prefix: str = "sim",
    hz: float = TICK_HZ,
    nether_share: float = 0.1,
    stop: asyncio.Event | None = None,
    stream_world: bool = True,
) -> None:
    """Run `npcs` simulated bots against the gateway at `url` until `stop` is set (or the task
    is cancelled). `secret_or_token_factory`: the gateway's token secret, or `(role, sub) ->
    token` (needs `npc` tokens for the bots and one `admin` token to register their roles)."""
    sim = Simulation(
        url,
        secret_or_token_factory,
        npcs,
        seed=seed,
        prefix=prefix,
        hz=hz,
        nether_share=nether_share,
        stream_world=stream_world,
    )
    await sim.start(connect_timeout=None)
    try:
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
    finally:
        await sim.stop()


if __name__ == "__main__":  # `python -m gateway.simulate …` is `python -m gateway simulate …`
    import sys

    from gateway.__main__ import main

    sys.exit(main(["simulate", *sys.argv[1:]]))
