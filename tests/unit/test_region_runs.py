"""What a cluster publisher copies and notes per region (gateway/bus/region_runs.py)."""

from __future__ import annotations

from gateway.bus.region_runs import NEW_S, NOTE_EVERY_S, RUN_GAP_S, RegionRuns


def test_a_region_is_new_and_noted_when_first_published_to() -> None:
    runs = RegionRuns()
    assert runs.sent({"r1"}, 100.0) == ({"r1"}, {"r1"})
    assert runs.sent({"r1"}, 100.5) == ({"r1"}, set())  # still new, already noted
    assert runs.sent({"r1"}, 100.0 + NEW_S) == (set(), set())


def test_a_region_kept_is_noted_again_every_while() -> None:
    runs = RegionRuns()
    now = 0.0
    noted = []
    while now < 3 * NOTE_EVERY_S:
        if runs.sent({"r1"}, now)[1]:
            noted.append(now)
        now += 0.5
    assert noted == [0.0, NOTE_EVERY_S, 2 * NOTE_EVERY_S]


def test_a_long_pause_starts_a_new_run_and_a_reset_forgets_all() -> None:
    runs = RegionRuns()
    runs.sent({"r1", "r2"}, 0.0)
    assert runs.sent({"r1"}, RUN_GAP_S + 1) == ({"r1"}, {"r1"})
    runs.reset()
    assert runs.sent({"r2"}, RUN_GAP_S + 2) == ({"r2"}, {"r2"})
