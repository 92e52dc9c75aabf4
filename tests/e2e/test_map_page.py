"""The live map in a real headless Chromium, against a real gateway with simulated bots.

Driven by Playwright for Python (its async API shares the event loop with the in-process
gateway and the simulator) using Debian's Chromium, never a downloaded browser:

    apt-get install -y chromium
    .venv/bin/pip install playwright      # no `playwright install`

Waits are `wait_for_function` polls with deadlines; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from gateway.simulate import Simulation, find_path, make_npcs
from tests.harness import REPO, SECRET, Rest, gateway_settings, running_gateway, token

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="needs Playwright: .venv/bin/pip install playwright"
)

CHROMIUM = os.environ.get("AICRAFT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO / "test-artifacts"
WAIT_MS = 20_000

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Chromium: apt-get install -y chromium"
)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A page at `url`, collecting uncaught errors and console errors."""
    page = await browser.new_page(viewport={"width": 1400, "height": 860}, has_touch=True)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    await page.goto(url)
    return page, errors


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition on this side (the simulator's state) with a deadline."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - plain state of the simulator, no event to await
            await asyncio.sleep(0.02)


async def test_live_map_lists_follows_filters_and_reconnects(tmp_path: Path, browser: Any) -> None:
    fleet = make_npcs(10, seed=21, prefix="e2e", nether_share=0.0)
    by_role: dict[str, list[str]] = {}
    for npc in fleet:
        by_role.setdefault(npc.role, []).append(npc.npc_id)

    async with (
        running_gateway(gateway_settings(tmp_path)) as gw,
        Simulation(gw.ws, SECRET, fleet) as sim,
    ):
        page, errors = await open_page(browser, f"{gw.http}/?token={token('viewer', 'e2e')}")
        rest = Rest(gw.http, token("admin", "e2e"))
        try:
            # Connected, and the list holds every bot (rows rendered, not just a count).
            await page.wait_for_selector('#conn[data-state="connected"]', timeout=WAIT_MS)
            assert (await page.text_content("#conn-text")) == "connected"
            await page.wait_for_function(
                """n => document.querySelector('#list-count').textContent === String(n)
                    && document.querySelectorAll('#list .row:not([hidden])').length === n""",
                arg=len(fleet),
                timeout=WAIT_MS,
            )
            listed = await page.evaluate("__aicraft.listed()")
            assert sorted(listed) == sorted(n.npc_id for n in fleet)
            roles = await page.evaluate(
                "ids => ids.map(id => __aicraft.npc(id).role)", [n.npc_id for n in fleet]
            )
            assert roles == [n.role for n in fleet]

            # A marker moves when its bot moves: hold a bot, see it settle, send it somewhere.
            bot = sim.by_id[fleet[0].npc_id]
            status, _ = await rest.call(
                "POST", f"/api/npcs/{bot.npc_id}/commands", {"action": "stop"}
            )
            assert status == 202
            await until(lambda: bot.phase == "held")
            held = [bot.x + 0.5, bot.z + 0.5]
            await page.wait_for_function(
                """([id, x, z]) => { const n = __aicraft.npc(id);
                    return n && n.x === x && n.z === z && n.drawX === x && n.drawZ === z; }""",
                arg=[bot.npc_id, *held],
                timeout=WAIT_MS,
            )
            goal = reachable_cell(bot, steps=6)
            status, _ = await rest.call(
                "POST",
                f"/api/npcs/{bot.npc_id}/commands",
                {"action": "goto", "args": {"x": goal[0] + 0.5, "y": 64, "z": goal[1] + 0.5}},
            )
            assert status == 202
            # On its way (drawn somewhere new), then at the goal with the task reported.
            await page.wait_for_function(
                """([id, x, z]) => { const n = __aicraft.npc(id);
                    return n.drawX !== x || n.drawZ !== z; }""",
                arg=[bot.npc_id, *held],
                timeout=WAIT_MS,
            )
            await page.wait_for_function(
                """([id, x, z]) => { const n = __aicraft.npc(id);
                    return n.x === x && n.z === z && n.drawX === x && n.drawZ === z; }""",
                arg=[bot.npc_id, goal[0] + 0.5, goal[1] + 0.5],
                timeout=WAIT_MS,
            )
            await page.wait_for_function(
                """name => [...document.querySelectorAll('#events li')].some(li =>
                    li.textContent.includes(name) && li.textContent.includes('task:completed')
                    && li.textContent.includes('task=goto'))""",
                arg=bot.name,
                timeout=WAIT_MS,
            )

            # Filter by role: only scouts stay, in the list and on the map.
            for role in by_role:
                if role != "scout":
                    await page.click(f'#roles .chip[data-role="{role}"]')
            scouts = sorted(by_role["scout"])
            await page.wait_for_function(
                "n => document.querySelector('#list-count').textContent === String(n)",
                arg=len(scouts),
                timeout=WAIT_MS,
            )
            assert sorted(await page.evaluate("__aicraft.listed()")) == scouts
            await page.wait_for_function(
                """scouts => { const drawn = __aicraft.state.all.filter(n => n.vis).map(n => n.id);
                    return drawn.length > 0 && drawn.every(id => scouts.includes(id)); }""",
                arg=scouts,
                timeout=WAIT_MS,
            )
            rows = await page.eval_on_selector_all(
                "#list .row:not([hidden])", "rows => rows.map(r => r.dataset.role)"
            )
            assert rows == ["scout"] * len(scouts)
            for role in by_role:
                if role != "scout":
                    await page.click(f'#roles .chip[data-role="{role}"]')
            await page.wait_for_function(
                "n => document.querySelector('#list-count').textContent === String(n)",
                arg=len(fleet),
                timeout=WAIT_MS,
            )

            # Area subscription: the fitted view asks for its rectangle (the gateway holds it);
            # zoomed far out, the whole dimension.
            await page.wait_for_function("__aicraft.state.subscription?.area", timeout=WAIT_MS)
            area = await page.evaluate("__aicraft.state.subscription.area")
            await until(lambda: any(v.area == tuple(map(float, area)) for v in gw.node.hub.viewers))
            view = await page.evaluate("({...__aicraft.state.view})")
            box = await page.locator("#map").bounding_box()
            assert box is not None
            mid = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            await page.mouse.move(*mid)
            await page.mouse.wheel(0, 2400)  # zoom out a lot
            await page.wait_for_function(
                "s => __aicraft.state.view.scale < s / 10", arg=view["scale"], timeout=WAIT_MS
            )
            await page.wait_for_function(
                "__aicraft.state.subscription && __aicraft.state.subscription.area === null",
                timeout=WAIT_MS,
            )
            await until(
                lambda: any(v.area is None and v.dim == "overworld" for v in gw.node.hub.viewers)
            )
            await page.click("#zoom-fit")
            await page.wait_for_function("__aicraft.state.subscription?.area", timeout=WAIT_MS)
            # Dragging pans the map.
            before_cx = await page.evaluate("__aicraft.state.view.cx")
            await page.mouse.move(*mid)
            await page.mouse.down()
            await page.mouse.move(mid[0] + 150, mid[1] + 40, steps=5)
            await page.mouse.up()
            assert await page.evaluate("__aicraft.state.view.cx") < before_cx
            # Pinch (real touch input through the DevTools protocol) zooms in.
            scale = await page.evaluate("__aicraft.state.view.scale")
            await pinch(page, mid, 40, 160)
            await page.wait_for_function(
                "s => __aicraft.state.view.scale > s * 2", arg=scale, timeout=WAIT_MS
            )
            await page.click("#zoom-fit")
            await page.wait_for_function(
                "n => __aicraft.state.filtered.length === n", arg=len(fleet), timeout=WAIT_MS
            )

            # Click an NPC in the list: selected, followed, its card shown.
            await page.click(f'#list .row[data-id="{bot.npc_id}"]')
            await page.wait_for_function(
                """id => __aicraft.state.selected === id && __aicraft.state.following
                    && !document.querySelector('#card').hidden""",
                arg=bot.npc_id,
                timeout=WAIT_MS,
            )
            assert bot.name in (await page.text_content("#card") or "")

            # Reconnect: the gateway drops every viewer; the page comes back with a new snapshot.
            before = await page.evaluate("({...__aicraft.stats})")
            for viewer in list(gw.node.hub.viewers):
                await viewer.close(1001, "test restart")
            await page.wait_for_function(
                """before => __aicraft.stats.connects > before.connects
                    && __aicraft.stats.snapshots > before.snapshots
                    && __aicraft.state.conn === 'connected'""",
                arg=before,
                timeout=WAIT_MS,
            )
            await page.wait_for_function(
                "n => __aicraft.state.filtered.length === n", arg=len(fleet), timeout=WAIT_MS
            )

            await page.wait_for_function("__aicraft.stats.fps > 0", timeout=WAIT_MS)
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "map.png"))
            assert errors == []
        finally:
            await rest.close()
            await page.close()


async def pinch(page: Any, centre: tuple[float, float], start: float, end: float) -> None:
    """Two fingers spread apart horizontally from `start` to `end` px around `centre`."""
    cdp = await page.context.new_cdp_session(page)
    x, y = centre

    def points(d: float) -> list[dict[str, float]]:
        return [{"x": x - d / 2, "y": y, "id": 1}, {"x": x + d / 2, "y": y, "id": 2}]

    await cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": points(start)})
    for i in range(1, 9):
        d = start + (end - start) * i / 8
        await cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": points(d)})
    await cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    await cdp.detach()


# Big frames cross into the page as base64: Playwright checks every list element it is given.
B64_HELPER = "window.bytes = s => Uint8Array.from(atob(s), c => c.charCodeAt(0));"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def reachable_cell(bot: Any, steps: int) -> tuple[int, int]:
    """A column at least `steps` legal steps away from where the bot stands."""
    for dx, dz in ((9, 4), (-9, 4), (4, -9), (-4, -9), (12, 0), (0, 12)):
        path, _ = find_path(bot.terrain, (bot.x, bot.z), (bot.x + dx, bot.z + dz))
        if len(path) >= steps:
            return path[-1]  # the end of a legal path is reachable, whether or not the goal was
    raise AssertionError("the bot is boxed in")


async def test_event_log_has_no_gap_after_a_reconnect(tmp_path: Path, browser: Any) -> None:
    """The page resumes with `since` (§11): events emitted while it was away fill the log.
    (Polled every 100 ms: an idle page draws no frames, so `raf` polling would stall.)"""
    async with running_gateway(gateway_settings(tmp_path)) as gw:
        page, errors = await open_page(browser, f"{gw.http}/?token={token('viewer', 'e2e')}")
        bot = await gw.bot("talker")
        try:
            await page.wait_for_selector('#conn[data-state="connected"]', timeout=WAIT_MS)
            # Somewhere on the map: the page subscribes to the area it shows, and events are
            # sent for NPCs inside a viewer's area.
            await bot.send({"type": "pos", "x": 0, "y": 64, "z": 0})
            await page.wait_for_function(
                "__aicraft.npc('talker') && __aicraft.npc('talker').x === 0",
                timeout=WAIT_MS,
                polling=100,
            )
            for i in range(5):
                await bot.send({"type": "event", "name": "chat", "data": {"text": f"a{i}"}})
            await page.wait_for_function(
                "document.querySelectorAll('#events li[data-seq]').length === 5",
                timeout=WAIT_MS,
                polling=100,
            )
            before = await page.evaluate("__aicraft.stats.connects")
            for viewer in list(gw.node.hub.viewers):
                await viewer.close(1001, "test restart")
            # Emitted while the page is away: in this same loop turn, before it can reconnect.
            for i in range(5):
                gw.node.accept_event("talker", "chat", {"text": f"b{i}"})
            await page.wait_for_function(
                "n => __aicraft.stats.connects > n && __aicraft.state.conn === 'connected'",
                arg=before,
                timeout=WAIT_MS,
                polling=100,
            )
            await bot.send({"type": "event", "name": "chat", "data": {"text": "live"}})
            await page.wait_for_function(
                "document.querySelectorAll('#events li[data-seq]').length === 11",
                timeout=WAIT_MS,
                polling=100,
            )
            seqs = await page.evaluate(
                "[...document.querySelectorAll('#events li[data-seq]')].map(li => +li.dataset.seq)"
            )
            assert seqs == list(range(11, 0, -1))  # newest first, every one, once
            stats = await page.evaluate("({...__aicraft.stats})")
            assert (stats["recoveries"], stats["recoveredEvents"]) == (1, 5)
            assert stats["recoveryFailures"] == 0
            assert errors == []
        finally:
            await bot.close()
            await page.close()


async def test_msgpack_decoder_matches_python_msgpack(tmp_path: Path, browser: Any) -> None:
    values: list[Any] = [
        None,
        True,
        False,
        *[0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**53 - 1],
        *[-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**53 - 1)],
        1.5,
        -0.25,
        1e300,
        "",
        "a",
        "x" * 31,
        "y" * 32,
        "z" * 255,
        "w" * 256,
        "v" * 70_000,
        "héllo wörld ⛏ — 🧱",
        "ü" * 40,
        list(range(15)),
        list(range(16)),
        list(range(70_000)),
        {f"k{i}": i for i in range(15)},
        {f"k{i}": i for i in range(16)},
        {f"k{i}": i for i in range(70_000)},
        {"type": "positions", "ts": 1_700_000_000_000, "updates": [{"id": "a", "x": 0.5}]},
        {"__proto__": {"polluted": True}, "ok": 1},
    ]
    frames = [b64(msgpack.packb(v, use_bin_type=True)) for v in values]
    frames.append(b64(msgpack.packb(1.5, use_single_float=True)))
    values.append(1.5)
    async with running_gateway(gateway_settings(tmp_path)) as gw:
        page, errors = await open_page(browser, f"{gw.http}/")  # no token: it stays offline
        await page.add_script_tag(content=B64_HELPER)
        decoded = await page.evaluate(
            """async frames => {
                const { decode } = await import('/static/msgpack.js');
                return frames.map(f => JSON.stringify(decode(bytes(f))));
            }""",
            frames,
        )
        for value, got in zip(values, decoded, strict=True):
            assert json.loads(got) == value, str(value)[:60]
        checks = await page.evaluate(
            """async ([big, bin, bad]) => {
                const { decode, DecodeError } = await import('/static/msgpack.js');
                const b = decode(bytes(bin));
                let threw = false;
                try { decode(bytes(bad)); } catch (e) { threw = e instanceof DecodeError; }
                return { big: String(decode(bytes(big))), bin: Array.from(b), threw };
            }""",
            [
                b64(msgpack.packb(2**64 - 1)),
                b64(msgpack.packb(b"\x00\x01\xff", use_bin_type=True)),
                b64(msgpack.packb("abc")[:-1]),  # truncated
            ],
        )
        assert checks == {"big": str(2**64 - 1), "bin": [0, 1, 255], "threw": True}
        assert errors == []


async def test_frame_rate_with_5000_npcs(tmp_path: Path, browser: Any) -> None:
    """5,000 NPCs moving every tick through the page's real decode → apply → draw path.

    Frames are made here with Python's msgpack and decoded in the page each tick. The frame
    rate is recorded in test-artifacts/map-fps.json, not asserted (it depends on the machine).
    """
    n, variants = 5000, 8
    snapshot = {
        "type": "snapshot",
        "npcs": [
            {
                "id": f"load-{i:05d}",
                "name": f"Load {i}",
                "role": ("miner", "builder", "scout", "farmer", "guard")[i % 5],
                "status": "walking",
                "online": True,
                # A 500 x 250 block grid around the origin: inside the page's opening view,
                # so it needs no new subscription (whose real, empty snapshot would win).
                "x": (i % 100) * 5.0 - 250,
                "y": 64,
                "z": (i // 100) * 5.0 - 125,
                "yaw": 0.0,
                "pitch": 0.0,
                "dim": "overworld",
            }
            for i in range(n)
        ],
    }
    frames = [b64(msgpack.packb(snapshot))]
    for k in range(variants):
        angle = 2 * math.pi * k / variants
        frames.append(
            b64(
                msgpack.packb(
                    {
                        "type": "positions",
                        "ts": 0,
                        "updates": [
                            {
                                "id": npc["id"],
                                "x": npc["x"] + 2 * math.cos(angle + i),
                                "y": 64,
                                "z": npc["z"] + 2 * math.sin(angle + i),
                                "yaw": 0.0,
                                "pitch": 0.0,
                                "dim": "overworld",
                            }
                            for i, npc in enumerate(snapshot["npcs"])
                        ],
                    }
                )
            )
        )
    async with running_gateway(gateway_settings(tmp_path, tick_ms=500)) as gw:
        page, errors = await open_page(browser, f"{gw.http}/?token={token('viewer', 'load')}")
        await page.wait_for_selector('#conn[data-state="connected"]', timeout=WAIT_MS)
        await page.wait_for_function(
            "__aicraft.stats.subscribes > 0 && __aicraft.stats.snapshots >= 2", timeout=WAIT_MS
        )
        await page.add_script_tag(content=B64_HELPER)
        await page.evaluate(
            """frames => {
                const a = window.__aicraft;
                const [snapshot, ...bufs] = frames.map(bytes);
                a.inject(a.decode(snapshot));
                let k = 0;
                window.__load = setInterval(() => {
                    a.state.stats.lastFrameTs = Date.now();
                    a.inject(a.decode(bufs[k++ % bufs.length]));
                }, a.state.tickMs);
            }""",
            frames,
        )
        await page.wait_for_function(f"__aicraft.stats.drawn === {n}", timeout=WAIT_MS)
        # A measurement window (not synchronisation): frames drawn over 4 s in the page.
        result = await page.evaluate(
            """() => new Promise(done => {
                const s = __aicraft.stats, r0 = s.rafs, t0 = performance.now(), u0 = s.updates;
                const long = [];
                let last = t0;
                const watch = now => { long.push(now - last); last = now;
                    if (now - t0 < 4000) requestAnimationFrame(watch); };
                requestAnimationFrame(watch);
                setTimeout(() => {
                    const t = performance.now() - t0;
                    long.sort((a, b) => a - b);
                    done({ fps: (s.rafs - r0) * 1000 / t, drawn: s.drawn,
                           updatesPerSecond: (s.updates - u0) * 1000 / t,
                           p95FrameMs: long[Math.floor(long.length * 0.95)] || 0 });
                }, 4000);
            })"""
        )
        await page.evaluate("clearInterval(window.__load)")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "map-5000.png"))
        (ARTIFACTS / "map-fps.json").write_text(json.dumps({"npcs": n, **result}, indent=2))
        print(f"\nmap with {n} NPCs: {result}")
        assert result["drawn"] == n and result["updatesPerSecond"] > 0
        assert errors == []


async def test_page_renews_its_token_and_never_drops(tmp_path: Path, browser: Any) -> None:
    """A page opened with a short-lived token stays connected past several of its lifetimes:
    it trades the token at POST /api/token and sends the new one over its socket (`auth`)."""
    ttl_s = 3
    async with running_gateway(gateway_settings(tmp_path)) as gw:
        page, errors = await open_page(browser, f"{gw.http}/?token={token('viewer', 'e2e', ttl_s)}")
        try:
            await page.wait_for_selector('#conn[data-state="connected"]', timeout=WAIT_MS)
            # Three lifetimes: each renewal is observed by the page's own counter.
            await page.wait_for_function(
                "__aicraft.state.stats.renewals >= 3", timeout=(4 * ttl_s + 20) * 1000
            )
            assert await page.evaluate("__aicraft.state.stats.connects") == 1
            assert await page.evaluate("__aicraft.state.conn") == "connected"
            # The address bar carries the current token, so a reload works too.
            url_token = await page.evaluate("new URLSearchParams(location.search).get('token')")
            assert url_token == await page.evaluate("__aicraft.token()")
            assert errors == []
        finally:
            await page.close()


async def test_page_drops_an_npc_that_leaves_the_area_shown(tmp_path: Path, browser: Any) -> None:
    """Zoomed in on one place, the page subscribes to that area; an NPC walking away from it
    leaves the map and the list "in the area shown" (§11), and comes back with it."""
    async with running_gateway(gateway_settings(tmp_path)) as gw:
        page, errors = await open_page(browser, f"{gw.http}/?token={token('viewer', 'e2e')}")
        bot = await gw.bot("wanderer")
        try:
            await page.wait_for_selector('#conn[data-state="connected"]', timeout=WAIT_MS)
            await page.evaluate("__aicraft.setView({cx: 0, cz: 0, scale: 4})")
            await page.wait_for_function("__aicraft.state.subscription?.area", timeout=WAIT_MS)
            area = await page.evaluate("__aicraft.state.subscription.area")
            await until(lambda: any(v.area == tuple(map(float, area)) for v in gw.node.hub.viewers))
            await bot.send({"type": "pos", "x": 5, "y": 64, "z": 5})
            await page.wait_for_function("__aicraft.npc('wanderer')?.x === 5", timeout=WAIT_MS)
            await bot.send({"type": "pos", "x": 9000, "y": 64, "z": 5})
            await page.wait_for_function("__aicraft.npc('wanderer') === null", timeout=WAIT_MS)
            await page.wait_for_function(
                "!__aicraft.listed().includes('wanderer')", timeout=WAIT_MS
            )
            await bot.send({"type": "pos", "x": 6, "y": 64, "z": 5})
            await page.wait_for_function("__aicraft.npc('wanderer')?.x === 6", timeout=WAIT_MS)
            assert errors == []
        finally:
            await bot.close()
            await page.close()


def _floor_section() -> str:
    """A 16x16x16 section with its bottom layer solid (flat ground), base64 for JSON."""
    bits = bytearray(512)
    bits[:32] = b"\xff" * 32  # bits 0-255: local y = 0, every z and x
    return base64.b64encode(bytes(bits)).decode()


async def test_terrain_under_the_npcs_follows_the_model(tmp_path: Path, browser: Any) -> None:
    """The page draws the shared world model's heightmap for the area on screen (§9), shaded
    by height, and picks up sections bots report while it is open."""
    async with running_gateway(gateway_settings(tmp_path)) as gw:
        bot = await gw.bot("mapper")
        await bot.send({"type": "chunk", "origin": [0, 48, 0], "solid": _floor_section()})
        await bot.roundtrip()
        page, errors = await open_page(browser, f"{gw.http}/?token={token('viewer', 'e2e')}")
        try:
            await page.wait_for_selector('#conn[data-state="connected"]', timeout=WAIT_MS)
            await page.evaluate("__aicraft.setView({cx: 16, cz: 8, scale: 8})")
            await page.wait_for_function("__aicraft.terrain().known === 256", timeout=WAIT_MS)
            # the ground's column at (8, 8) is drawn; the unknown column at (24, 8) is not
            ground, unknown = await page.evaluate(
                """() => {
                    const c = document.getElementById('map'), g = c.getContext('2d');
                    const v = __aicraft.state.view, d = window.devicePixelRatio || 1;
                    const at = (x, z) => Array.from(g.getImageData(
                        Math.round(((x + 0.5 - v.cx) * v.scale + c.clientWidth / 2) * d),
                        Math.round(((z + 0.5 - v.cz) * v.scale + c.clientHeight / 2) * d),
                        1, 1).data);
                    return [at(8, 8), at(24, 8)];
                }"""
            )
            assert ground != unknown and ground[1] > unknown[1]  # green ground, dark background
            # A second bot reports the section next to it, one block higher: the page shows it
            # without a reload, and higher ground lighter.
            other = await gw.bot("mapper2")
            higher = bytearray(base64.b64decode(_floor_section()))
            higher[32:64] = b"\xff" * 32  # local y = 1 as well
            await other.send(
                {"type": "chunk", "origin": [16, 48, 0], "solid": base64.b64encode(higher).decode()}
            )
            await page.wait_for_function("__aicraft.terrain().known === 512", timeout=WAIT_MS)
            await page.wait_for_function(
                """() => {
                    const c = document.getElementById('map'), g = c.getContext('2d');
                    const v = __aicraft.state.view, d = window.devicePixelRatio || 1;
                    const px = (x) => g.getImageData(
                        Math.round(((x + 0.5 - v.cx) * v.scale + c.clientWidth / 2) * d),
                        Math.round(((8.5 - v.cz) * v.scale + c.clientHeight / 2) * d), 1, 1).data;
                    return px(28)[1] > px(4)[1];
                }""",
                timeout=WAIT_MS,
            )
            rest = Rest(gw.http, token("viewer", "v"))
            try:
                status, body = await rest.call("GET", "/api/world/overworld")
            finally:
                await rest.close()
            assert status == 200 and body["sections"] == 2
            assert errors == []
        finally:
            await bot.close()
            await page.close()
