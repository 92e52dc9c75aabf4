"""The simulator's pure core: terrain from a seed, legal steps only, commands and reports."""

from __future__ import annotations

import random
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.simulate import (
    ROLES,
    SimNpc,
    Terrain,
    find_path,
    http_base,
    legal_step,
    make_npcs,
)

STATUS_RE = re.compile(r"[a-z0-9_-]{1,32}")
seeds = st.integers(min_value=0, max_value=2**63)


def cells_of(messages: list[dict]) -> list[tuple[int, int]]:
    return [(int(m["x"] - 0.5), int(m["z"] - 0.5)) for m in messages if m["type"] == "pos"]


@given(seed=seeds)
@settings(max_examples=25, deadline=None)
def test_terrain_is_deterministic_for_a_seed(seed: int) -> None:
    a, b = Terrain(seed), Terrain(seed)
    points = [(x, z) for x in range(-40, 40, 7) for z in range(-40, 40, 7)]
    assert [a.height(*p) for p in points] == [b.height(*p) for p in points]
    assert all(30 <= a.height(*p) <= 100 for p in points)


def test_terrain_does_not_depend_on_the_process() -> None:
    # Golden values: no salted hash() or global random state may leak into the heights.
    t = Terrain(1)
    assert [t.height(x, 0) for x in range(0, 40, 8)] == [67, 67, 72, 72, 72]
    assert [t.height(0, z) for z in range(-100, 100, 40)] == [79, 70, 77, 77, 69]
    assert (Terrain(2).height(0, 0), Terrain(7).height(123, -456)) == (60, 66)


def test_terrain_has_cliffs_that_forbid_steps() -> None:
    t = Terrain(1)
    illegal = sum(
        not legal_step(t, (x, z), (x + 1, z))
        for x in range(-150, 150)
        for z in range(-150, 150, 10)
    )
    assert illegal > 20  # otherwise "only legal steps" would test nothing


def test_legal_step_rules() -> None:
    t = Terrain(1)
    a = (0, 0)
    for b in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        dy = t.height(*b) - t.height(*a)
        assert legal_step(t, a, b) == (-3 <= dy <= 1)
    assert not legal_step(t, a, (1, 1))  # diagonal
    assert not legal_step(t, a, (2, 0))  # two columns
    assert not legal_step(t, a, a)  # standing still is not a step


@given(seed=seeds, dx=st.integers(-30, 30), dz=st.integers(-30, 30))
@settings(max_examples=40, deadline=None)
def test_find_path_is_a_chain_of_legal_steps(seed: int, dx: int, dz: int) -> None:
    t = Terrain(seed)
    path, reached = find_path(t, (0, 0), (dx, dz), max_nodes=5_000)
    here = (0, 0)
    for cell in path:
        assert legal_step(t, here, cell)
        here = cell
    if reached:
        assert here == (dx, dz)
    else:
        assert here != (dx, dz)


class PillarTerrain(Terrain):
    """Flat ground with one column far too high to climb onto."""

    def _height(self, x: int, z: int) -> int:
        return 80 if (x, z) == (5, 0) else 64


def test_find_path_reports_an_unreachable_goal() -> None:
    t = PillarTerrain(0)
    path, reached = find_path(t, (0, 0), (5, 0), max_nodes=2_000)
    assert not reached
    assert path[-1] in ((4, 0), (5, 1), (5, -1), (6, 0))  # as close as it gets
    # Over the node budget counts as not reached too.
    path, reached = find_path(Terrain(1), (0, 0), (500, 500), max_nodes=50)
    assert not reached


def test_goto_an_unreachable_spot_fails_the_task() -> None:
    npc = SimNpc("b1", "B", "miner", PillarTerrain(0), random.Random(1), 0, 0)
    out = npc.command("goto", {"x": 5.5, "y": 81, "z": 0.5}, "c9")
    out += run(npc, 20)
    (failed,) = [m for m in out if m["type"] == "event"]
    assert failed["name"] == "task:failed" and failed["data"]["reason"] == "unreachable"


@given(
    seed=seeds, orders=st.lists(st.tuples(st.integers(-40, 40), st.integers(-40, 40)), max_size=3)
)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_walkers_only_take_legal_steps(seed: int, orders: list[tuple[int, int]]) -> None:
    npcs = make_npcs(5, seed=seed, nether_share=0.3)
    last = {npc.npc_id: (npc.x, npc.z) for npc in npcs}
    for tick in range(200):
        for i, npc in enumerate(npcs):
            out = npc.tick()
            if tick in (60, 150) and i < len(orders):
                ox, oz = orders[i]
                out += npc.command("goto", {"x": npc.x + ox, "y": 64, "z": npc.z + oz}, "c")
            for cell in cells_of(out):
                if cell != last[npc.npc_id]:  # a pos while standing is a look-around
                    assert legal_step(npc.terrain, last[npc.npc_id], cell), (npc.npc_id, tick)
                last[npc.npc_id] = cell
            for m in out:
                if m["type"] == "pos":
                    (column,) = cells_of([m])
                    assert m["y"] == npc.terrain.height(*column) + 1  # feet on the ground
                if m["type"] == "status":
                    assert STATUS_RE.fullmatch(m["status"])
    assert any(npc.steps > 0 for npc in npcs)


def test_make_npcs_cycles_roles_and_is_reproducible() -> None:
    a, b = make_npcs(10, seed=3), make_npcs(10, seed=3)
    assert [n.role for n in a] == [ROLES[i % 5] for i in range(10)]
    assert [(n.npc_id, n.x, n.z, n.dim) for n in a] == [(n.npc_id, n.x, n.z, n.dim) for n in b]
    assert len({n.npc_id for n in a}) == 10
    assert all(n.dim == "overworld" for n in make_npcs(20, seed=3, nether_share=0))


def walker(seed: int = 11, role: str = "miner") -> SimNpc:
    return SimNpc("b1", "B", role, Terrain(seed), random.Random(seed), 0, 0)


def run(npc: SimNpc, ticks: int) -> list[dict]:
    out: list[dict] = []
    for _ in range(ticks):
        out += npc.tick()
    return out


def test_goto_walks_there_and_reports_completion() -> None:
    npc = walker()
    path, _ = find_path(npc.terrain, (0, 0), (12, -7))
    assert len(path) > 5
    goal = path[-1]  # reachable by construction
    out = npc.command("goto", {"x": goal[0] + 0.5, "y": 70, "z": goal[1] + 0.5}, "cmd-1")
    assert {"type": "status", "status": "walking"} in out
    out += run(npc, len(path) + 2)
    done = [m for m in out if m["type"] == "event" and m["name"] == "task:completed"]
    assert len(done) == 1
    assert done[0]["data"]["command"] == "cmd-1" and done[0]["data"]["task"] == "goto"
    assert (done[0]["data"]["x"], done[0]["data"]["z"]) == (goal[0] + 0.5, goal[1] + 0.5)
    assert (npc.x, npc.z) == goal and npc.phase == "held" and npc.status == "idle"
    assert cells_of(run(npc, 50)) == []  # stays there until the next command


def test_stop_holds_the_bot_and_fails_the_running_order() -> None:
    npc = walker()
    npc.command("goto", {"x": 30, "y": 0, "z": 30}, "c1")
    run(npc, 3)
    out = npc.command("stop", {}, "c2")
    assert any(m.get("name") == "task:failed" and m["data"]["reason"] == "stopped" for m in out)
    assert {"type": "status", "status": "idle"} in out
    here = (npc.x, npc.z)
    assert cells_of(run(npc, 100)) == [] and (npc.x, npc.z) == here
    npc.command("resume", None)
    assert npc.phase != "held"


def test_say_and_unknown_commands_become_events() -> None:
    npc = walker()
    assert npc.command("say", {"text": "hello"}, 7) == [
        {"type": "event", "name": "chat", "data": {"text": "hello", "command": 7}}
    ]
    (rejected,) = npc.command("dance", {}, 8)
    assert rejected["name"] == "command:rejected" and rejected["data"]["action"] == "dance"
    (bad,) = npc.command("goto", {"x": "north"}, 9)
    assert bad["name"] == "task:failed" and bad["data"]["reason"] == "bad_args"


def test_bots_work_report_metrics_and_task_events() -> None:
    npcs = make_npcs(10, seed=4)
    out = [m for npc in npcs for m in run(npc, 600)]
    metric_names = {m["name"] for m in out if m["type"] == "metric"}
    assert metric_names == {"health", "food", "ore"}
    events = {m["name"] for m in out if m["type"] == "event"}
    assert {"task:completed", "task:failed"} <= events
    statuses = {m["status"] for m in out if m["type"] == "status"}
    assert {"idle", "walking", "mining", "building", "scouting", "farming", "guarding"} <= statuses
    assert any(npc.ore > 0 for npc in npcs if npc.role == "miner")


def test_http_base() -> None:
    assert http_base("ws://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert http_base("ws://h:1/ws/npc") == "http://h:1"
    assert http_base("wss://example.test/") == "https://example.test"
