"""LateWindows: a peer's window cut before its `left` for an NPC, heard after it, is dropped."""

from __future__ import annotations

from gateway.core.late_windows import LateWindows


def test_a_window_cut_no_later_than_the_leave_is_late() -> None:
    late = LateWindows()
    late.left("bot", "a", ts=1000, now=0.0)
    assert late.late("bot", "a", 999, now=0.1)
    assert late.late("bot", "a", 1000, now=0.1)  # the last window with it
    assert not late.late("bot", "a", 1001, now=0.1)  # it rejoined on the same replica


def test_only_the_leaving_replicas_windows_are_compared() -> None:
    late = LateWindows()
    late.left("bot", "a", ts=1000, now=0.0)
    assert not late.late("bot", "b", 10, now=0.1)  # rejoined elsewhere: another clock
    assert not late.late("other", "a", 10, now=0.1)


def test_a_new_leave_replaces_the_old() -> None:
    late = LateWindows()
    late.left("bot", "a", ts=1000, now=0.0)
    late.left("bot", "b", ts=50, now=1.0)
    assert not late.late("bot", "a", 900, now=1.1)
    assert late.late("bot", "b", 50, now=1.1)


def test_leaves_are_forgotten_after_keep_s() -> None:
    late = LateWindows(keep_s=5.0)
    late.left("bot", "a", ts=1000, now=0.0)
    assert late.late("bot", "a", 1000, now=5.0)
    assert not late.late("bot", "a", 1000, now=5.1)
    assert len(late) == 0
    late.left("old", "a", ts=1, now=0.0)
    late.left("new", "a", ts=1, now=6.0)  # expires what is past keep_s on the way
    assert len(late) == 1


def test_the_number_remembered_is_bounded() -> None:
    late = LateWindows(keep=3)
    for i in range(5):
        late.left(f"n{i}", "a", ts=i, now=0.0)
    assert len(late) == 3
    assert not late.late("n0", "a", 0, now=0.0)  # the oldest went first
    assert late.late("n4", "a", 4, now=0.0)


def test_on_time_keeps_the_rows_of_npcs_not_left_and_drops_the_late() -> None:
    late = LateWindows()
    rows = [("bot", 1.0), ("other", 2.0)]
    assert late.on_time("a", 1000, rows, now=0.0) is rows  # nothing remembered: as they are
    late.left("bot", "a", ts=1000, now=0.0)
    assert late.on_time("a", 1000, rows, now=0.1) == [("other", 2.0)]
    assert late.on_time("a", 1001, rows, now=0.1) == rows
    assert late.on_time("b", 1000, rows, now=0.1) == rows
    assert late.on_time("a", 1000, rows, now=31.0) == rows  # forgotten past KEEP_S
    assert len(late) == 0
