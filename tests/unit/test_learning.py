"""Learning profiles from task events (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.learning import apply_task, level_for, parse_task
from gateway.protocol import ProtocolError


def test_levels() -> None:
    assert [level_for(x) for x in (0, 99, 100, 299, 300, 600)] == [1, 1, 2, 2, 3, 4]


def test_outcomes_accumulate_and_keep_foreign_keys() -> None:
    profile = {"notes": "operator's"}
    profile = apply_task(profile, True, "dig", 150, "mining", 1)
    profile = apply_task(profile, False, "dig", 50, "mining", 2)
    profile = apply_task(profile, True, "build", 20, None, 3)
    assert profile["tasks"] == {"total": 3, "succeeded": 2, "failed": 1, "successRate": 0.6667}
    assert profile["experience"] == 170 and profile["level"] == 2
    assert profile["skills"]["mining"] == {
        "experience": 150,
        "level": 2,
        "succeeded": 1,
        "failed": 1,
    }
    assert profile["lastTask"] == {"task": "build", "ok": True, "skill": None, "xp": 20, "at": 3}
    assert profile["notes"] == "operator's"


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"task": 5},
        {"task": "x", "xp": -1},
        {"task": "x", "xp": float("nan")},
        {"task": "x", "xp": True},
        {"task": "x", "skill": ""},
    ],
)
def test_malformed_task_data_is_refused(data: dict) -> None:
    with pytest.raises(ProtocolError):
        parse_task("task:completed", data, None)


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1000), st.sampled_from(["a", "b", None]))))
def test_counts_always_add_up(outcomes: list) -> None:
    profile: dict = {}
    for ok, xp, skill in outcomes:
        profile = apply_task(profile, ok, "t", xp, skill, 0)
    if outcomes:
        tasks = profile["tasks"]
        assert tasks["total"] == len(outcomes) == tasks["succeeded"] + tasks["failed"]
        skills = profile.get("skills", {})
        assert sum(s["succeeded"] + s["failed"] for s in skills.values()) == sum(
            1 for _, _, s in outcomes if s is not None
        )
