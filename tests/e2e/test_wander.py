"""`make minecraft-demo`'s bots (bots.js --wander --roles): an operator's goto is never cut short
by wandering, wandering resumes after it, and each bot carries its role (not `unknown`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_mineflayer import NodeProcess, World, node_modules, until  # noqa: F401 (fixture)
from tests.harness import SECRET, GatewayProcess, Rest, token

pytestmark = pytest.mark.timeout(300)

NAME = "wd_1"


class Records:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.items.append(record)

    def find(self, **match: Any) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.items if all(r.get(k) == v for k, v in match.items())]

    def task_end(self, command: str) -> dict[str, Any] | None:
        ends = [
            r
            for r in self.find(kind="event")
            if r["name"].startswith("task:") and r["data"].get("command") == command
        ]
        return ends[0] if ends else None

    def wanders(self) -> list[str]:
        return [r["id"] for r in self.find(kind="command") if str(r["id"]).startswith("wander-")]


@pytest.fixture
def world(node_modules: Path, tmp_path: Path) -> Iterator[World]:  # noqa: F811
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.node.stop()


async def test_operator_goto_wins_over_wandering_which_resumes_after(
    world: World, tmp_path: Path
) -> None:
    gw = GatewayProcess({"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_TICK_MS": "100"})
    gw.start()
    admin = Rest(gw.http, token("admin", "ops"))
    records = Records()
    bots = NodeProcess(
        [
            "bots.js",
            "--server",
            f"127.0.0.1:{world.port}",
            "--gateway",
            gw.ws,
            "--npcs",
            "1",
            "--prefix",
            "wd_",
            "--secret",
            SECRET,
            "--wander",
            "--wander-radius",
            "3",
            "--roles",
            "builder",
            "--json",
        ],
        tmp_path / "bots.log",
        records.add,
    )
    try:
        await until("the bot to start wandering", records.wanders, 60)
        spawn = records.find(kind="spawn")[0]
        # Far enough that the walk outlasts the wander pause (1-4 s) several times over.
        goal = {"x": int(spawn["x"]) + 30, "z": int(spawn["z"])}
        status, body = await admin.call(
            "POST", f"/api/npcs/{NAME}/commands", {"action": "goto", "args": goal}
        )
        assert status == 202 and body["delivered"] is True, body
        cid = body["id"]
        end = await until("the operator's goto to end", lambda: records.task_end(cid), 90)
        assert end["name"] == "task:completed", (end, bots.stderr())
        during = len(records.wanders())
        await until("wandering to resume", lambda: len(records.wanders()) > during, 30)
        _, npc = await admin.call("GET", f"/api/npcs/{NAME}")
        assert npc["role"] == "builder"
    finally:
        bots.stop()
        await admin.close()
        gw.terminate()
