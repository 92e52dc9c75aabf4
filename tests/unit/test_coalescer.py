"""The pure latest-wins window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.coalescer import Coalescer
from gateway.types import PositionUpdate


def _pos(npc: str, x: float) -> PositionUpdate:
    return {"id": npc, "x": x, "y": 0.0, "z": 0.0, "yaw": 0.0, "pitch": 0.0, "dim": "overworld"}


def test_ten_updates_in_one_window_give_one_entry_with_the_last_value() -> None:
    window = Coalescer()
    for i in range(10):
        window.add(_pos("a", i))
    cut = window.cut()
    assert list(cut) == ["a"] and cut["a"]["x"] == 9
    assert (window.items_processed, window.items_coalesced, window.total_batches) == (10, 9, 1)
    assert window.cut() == {} and window.total_batches == 1  # empty cuts are not batches


def test_discard_forgets_a_pending_update() -> None:
    window = Coalescer()
    window.add(_pos("a", 1))
    window.discard("a")
    assert window.pending == 0 and window.cut() == {}


@given(
    st.lists(st.tuples(st.sampled_from("abcde"), st.integers()), max_size=200),
    st.sets(st.integers(0, 200)),
)
def test_every_cut_holds_each_npc_once_with_its_latest(
    stream: list[tuple[str, int]], cut_points: set[int]
) -> None:
    window = Coalescer()
    latest: dict[str, int] = {}
    seen_in_window: dict[str, int] = {}
    cuts = []
    for i, (npc, x) in enumerate(stream):
        if i in cut_points:
            cuts.append((window.cut(), dict(seen_in_window)))
            seen_in_window.clear()
        window.add(_pos(npc, x))
        latest[npc] = x
        seen_in_window[npc] = x
    cuts.append((window.cut(), dict(seen_in_window)))
    for cut, expected in cuts:
        assert {k: u["x"] for k, u in cut.items()} == expected
    assert window.items_processed == len(stream)
    assert window.items_processed - window.items_coalesced == sum(len(c) for c, _ in cuts)
