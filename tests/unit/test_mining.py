"""Mining strategy ranking and validation (pure)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol import ErrorCode, ProtocolError
from gateway.workers.mining import parse_mining, rank_deposits


def plan(msg: dict[str, Any]) -> list[dict[str, Any]]:
    return rank_deposits(parse_mining(msg))


def test_ranks_by_value_times_count_over_distance() -> None:
    deposits = [
        {"x": 3, "y": 4, "z": 0, "kind": "iron", "count": 6},  # d=5: 1*6/6 = 1
        {"x": 0, "y": 0, "z": 9, "kind": "diamond", "count": 1},  # d=9: 10/10 = 1 (tie, later)
        {"x": 1, "y": 0, "z": 0, "kind": "coal", "count": 10},  # d=1: 0.1*10/2 = 0.5
        {"x": 0, "y": 0, "z": 0, "kind": "gold", "count": 2},  # d=0: 5*2/1 = 10
        {"x": 0, "y": 0, "z": 0, "kind": "dirt", "count": 50},  # no value: 0
    ]
    values = {"iron": 1, "diamond": 10, "coal": 0.1, "gold": 5}
    result = plan({"position": [0, 0, 0], "deposits": deposits, "values": values})
    assert [d["kind"] for d in result] == ["gold", "iron", "diamond", "coal", "dirt"]
    assert result[0]["score"] == 10
    assert math.isclose(result[3]["score"], 0.5)
    assert result[0] == {
        "x": 0, "y": 0, "z": 0, "kind": "gold", "count": 2, "distance": 0.0, "score": 10.0,
    }  # fmt: skip


def test_top_limits_and_defaults_to_ten() -> None:
    deposits = [{"x": i, "y": 0, "z": 0, "kind": "iron", "count": 1} for i in range(30)]
    msg: dict[str, Any] = {"position": [0, 0, 0], "deposits": deposits, "values": {"iron": 1}}
    assert [d["x"] for d in plan(msg)] == list(range(10))
    assert [d["x"] for d in plan({**msg, "top": 3})] == [0, 1, 2]
    assert plan({**msg, "deposits": []}) == []


@given(
    st.lists(
        st.tuples(
            st.integers(-100, 100),
            st.integers(-64, 64),
            st.integers(-100, 100),
            st.sampled_from(["a", "b", "c"]),
            st.integers(0, 20),
        ),
        max_size=40,
    ),
    st.integers(1, 50),
)
def test_plan_is_the_best_scores_in_order(rows: list[Any], top: int) -> None:
    values = {"a": 1.0, "b": 2.5, "c": -1.0}
    deposits = [{"x": x, "y": y, "z": z, "kind": k, "count": c} for x, y, z, k, c in rows]
    result = plan({"position": [1, 2, 3], "deposits": deposits, "values": values, "top": top})
    scores = sorted(
        (values[k] * c / (1 + math.dist((x, y, z), (1, 2, 3))) for x, y, z, k, c in rows),
        reverse=True,
    )
    assert len(result) == min(top, len(rows))
    assert [d["score"] for d in result] == pytest.approx(scores[:top])


@pytest.mark.parametrize(
    "msg",
    [
        {"deposits": [], "values": {}},
        {"position": [0, 0], "deposits": [], "values": {}},
        {"position": [0, 0, float("nan")], "deposits": [], "values": {}},
        {"position": [0, 0, 0], "deposits": {}, "values": {}},
        {"position": [0, 0, 0], "deposits": [], "values": []},
        {"position": [0, 0, 0], "deposits": [], "values": {"a": "x"}},
        {"position": [0, 0, 0], "deposits": [], "values": {}, "top": 0},
        {"position": [0, 0, 0], "deposits": [], "values": {}, "top": True},
        {"position": [0, 0, 0], "deposits": [5], "values": {}},
        {"position": [0, 0, 0], "deposits": [{"x": 0, "y": 0, "z": 0, "kind": "a"}], "values": {}},
        {
            "position": [0, 0, 0],
            "deposits": [{"x": 0, "y": 0, "z": 0, "kind": "a", "count": -1}],
            "values": {},
        },
        {
            "position": [0, 0, 0],
            "deposits": [{"x": "0", "y": 0, "z": 0, "kind": "a", "count": 1}],
            "values": {},
        },
    ],
)
def test_malformed_requests_are_bad_message(msg: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_mining(msg, ref=9)
    assert err.value.code is ErrorCode.BAD_MESSAGE
    assert err.value.ref == 9
