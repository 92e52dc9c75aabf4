"""The live map's overview in a real headless Chromium: search, list and the ONLINE counter
cover the whole registry (not just the area on screen), labels never overlap, an empty gateway
says how to get bots on the map, and the hover tooltip does not outlive a dimension switch.

NPCs are real bots (raw WebSocket peers) on a real in-process gateway; waits are
`wait_for_function` polls with deadlines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.test_map_page import WAIT_MS, browser, open_page  # noqa: F401 (fixture)
from tests.harness import Peer, Rest, RunningGateway, gateway_settings, running_gateway, token


async def _bots(
    gw: RunningGateway, rest: Rest, spots: dict[str, tuple[str, float, float]]
) -> list[Peer]:
    """Register each NPC with a name and role, connect its bot and put it at (x, z)."""
    peers = []
    for npc, (name, x, z) in spots.items():
        status, _ = await rest.call("POST", "/api/npcs", {"id": npc, "name": name, "role": "miner"})
        assert status == 201
        bot = await gw.bot(npc)
        await bot.send({"type": "pos", "x": x, "y": 64, "z": z})
        await bot.roundtrip()
        peers.append(bot)
    return peers


async def test_search_list_and_counter_cover_the_whole_registry(
    tmp_path: Path,
    browser: Any,  # noqa: F811
) -> None:
    spots = {f"near_{i}": (f"Near {i}", i * 4.0, 0.0) for i in range(5)}
    spots["twin_a"] = ("Twin Alpha", 10.0, 10.0)
    spots["twin_b"] = ("Twin Beta", 6000.0, 10.0)  # far outside the area on screen
    spots["far_1"] = ("Far One", 6010.0, 20.0)
    async with running_gateway(gateway_settings(tmp_path)) as gw:
        rest = Rest(gw.http, token("admin", "ops"))
        peers = await _bots(gw, rest, spots)
        page, errors = await open_page(browser, f"{gw.http}/?token={token('viewer', 'v')}")
        try:
            await page.wait_for_selector('#conn[data-state="connected"]', timeout=WAIT_MS)
            # Look closely at the near group: the page subscribes to that area only.
            await page.evaluate("__aicraft.setView({cx: 8, cz: 4, scale: 8})")
            await page.wait_for_function(
                """() => { const s = __aicraft.state.subscription;
                    return s && s.area && s.area[2] < 1000
                        && !__aicraft.state.npcs.has('twin_b'); }""",
                timeout=WAIT_MS,
            )
            # ONLINE counts every online NPC, not the 6 in the area.
            await page.wait_for_function(
                "n => document.querySelector('#c-online').textContent === String(n)",
                arg=len(spots),
                timeout=WAIT_MS,
            )
            # Search finds both twins, the one far away too.
            await page.fill("#search", "twin")
            await page.wait_for_function(
                "() => __aicraft.listed().slice().sort().join() === 'twin_a,twin_b'",
                timeout=WAIT_MS,
            )
            await page.wait_for_selector('#list .row[data-id="twin_b"]', timeout=WAIT_MS)
            # Picking the far one takes the map there, where it is drawn and followed.
            await page.click('#list .row[data-id="twin_b"]')
            await page.wait_for_function(
                """() => { const n = __aicraft.npc('twin_b');
                    return __aicraft.state.selected === 'twin_b' && n && n.visible; }""",
                timeout=WAIT_MS,
            )
            # Going offline is counted too.
            await peers[0].close()
            await page.wait_for_function(
                "n => document.querySelector('#c-online').textContent === String(n)",
                arg=len(spots) - 1,
                timeout=WAIT_MS,
            )
            assert errors == []
        finally:
            await rest.close()
            await page.close()


async def test_labels_of_crowded_npcs_never_overlap(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    spots = {
        f"crowd_{i:02}": (f"Crowd member {i:02}", (i % 6) * 0.7, (i // 6) * 0.7) for i in range(36)
    }
    async with running_gateway(gateway_settings(tmp_path)) as gw:
        rest = Rest(gw.http, token("admin", "ops"))
        await _bots(gw, rest, spots)
        page, errors = await open_page(browser, f"{gw.http}/?token={token('viewer', 'v')}")
        try:
            await page.wait_for_selector('#conn[data-state="connected"]', timeout=WAIT_MS)
            await page.wait_for_function(
                "n => __aicraft.state.all.filter(x => x.vis).length === n",
                arg=len(spots),
                timeout=WAIT_MS,
            )
            await page.evaluate("__aicraft.setView({cx: 2, cz: 2, scale: 6})")
            await page.fill("#search", "member 20")  # the row to click, among 36
            await page.click('#list .row[data-id="crowd_20"]')
            await page.fill("#search", "")
            await page.wait_for_function(
                "() => __aicraft.labels().some(l => l.id === 'crowd_20')", timeout=WAIT_MS
            )
            labels = await page.evaluate("__aicraft.labels()")
            assert 1 <= len(labels) < len(spots)  # some hidden: they would collide
            for i, a in enumerate(labels):
                for b in labels[i + 1 :]:
                    apart = (
                        a["x1"] <= b["x0"]
                        or b["x1"] <= a["x0"]
                        or a["y1"] <= b["y0"]
                        or b["y1"] <= a["y0"]
                    )
                    assert apart, (a, b)
            assert errors == []
        finally:
            await rest.close()
            await page.close()


async def test_an_empty_map_says_how_to_connect_a_bot(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    async with running_gateway(gateway_settings(tmp_path)) as gw:
        rest = Rest(gw.http, token("admin", "ops"))
        page, errors = await open_page(browser, f"{gw.http}/?token={token('viewer', 'v')}")
        try:
            await page.wait_for_selector("#empty:not([hidden])", timeout=WAIT_MS)
            hint = await page.text_content("#empty") or ""
            assert "make demo" in hint and "/ws/npc" in hint and "make -s token" in hint
            await _bots(gw, rest, {"first": ("First", 1.0, 1.0)})
            await page.wait_for_selector("#empty", state="hidden", timeout=WAIT_MS)
            assert errors == []
        finally:
            await rest.close()
            await page.close()


async def test_the_tooltip_goes_with_a_dimension_switch(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    async with running_gateway(gateway_settings(tmp_path)) as gw:
        rest = Rest(gw.http, token("admin", "ops"))
        await _bots(gw, rest, {"hover_me": ("Hover Me", 0.0, 0.0)})
        page, errors = await open_page(browser, f"{gw.http}/?token={token('viewer', 'v')}")
        try:
            await page.wait_for_function("__aicraft.npc('hover_me')?.visible", timeout=WAIT_MS)
            spot = await page.evaluate(
                "(() => { const n = __aicraft.state.npcs.get('hover_me'); return [n.sx, n.sy]; })()"
            )
            box = await page.locator("#map").bounding_box()
            assert box is not None
            await page.mouse.move(box["x"] + spot[0], box["y"] + spot[1])
            await page.wait_for_selector("#tooltip:not([hidden])", timeout=WAIT_MS)
            assert "Hover Me" in (await page.text_content("#tooltip") or "")
            await page.select_option("#dim", "the_nether")
            await page.wait_for_selector("#tooltip", state="hidden", timeout=WAIT_MS)
            assert await page.evaluate("__aicraft.state.hover") is None
            assert errors == []
        finally:
            await rest.close()
            await page.close()
