"""Hypothesis strategies for what a hostile or sloppy client sends: near-valid messages with
wrong fields, values neither encoding should carry, garbage, and the odd oversized frame."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
from hypothesis import strategies as st

from gateway.protocol import MAX_FRAME_BYTES

BOT_TYPES = ["pos", "status", "metric", "event", "path", "mining_plan", "ping", "ack"]
VIEWER_TYPES = ["subscribe", "ping"]
FIELDS = [
    "x", "y", "z", "yaw", "pitch", "dim", "status", "name", "value", "ts", "data", "id",
    "ref", "npc", "start", "goal", "world", "max_nodes", "timeout_ms", "area", "position",
    "deposits", "values", "top", "token", "since",
]  # fmt: skip

# Scalars at and around every boundary the contract names.
EDGE_NUMBERS = st.sampled_from(
    [0, -1, 1, 2**31, 2**53, 2**63 - 1, -(2**63), 2**64 - 1, 30_000_000, 30_000_001,
     -30_000_001, 2048, 2049, -2049, 1e308, -1e308, 5e-324, 0.5, -0.0]
)  # fmt: skip
SPECIAL_FLOATS = st.sampled_from([float("nan"), float("inf"), float("-inf")])
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "overworld", "a" * 64, "a" * 65, "x\x00y", "task:completed",
                     "task:failed", "ok", "OK", "é" * 33, "\ud7ff", "0" * 129]),
)  # fmt: skip


def scalars(msgpack_only: bool) -> st.SearchStrategy[Any]:
    base = [st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), EDGE_NUMBERS,
            st.floats(allow_nan=False, allow_infinity=False), TEXT]  # fmt: skip
    if msgpack_only:  # only msgpack can carry these: the gateway must refuse them
        ext = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
        base += [SPECIAL_FLOATS, st.binary(max_size=16), ext]
    return st.one_of(*base)


def values(msgpack_only: bool) -> st.SearchStrategy[Any]:
    keys = st.one_of(TEXT, st.integers(-5, 5)) if msgpack_only else TEXT
    return st.recursive(
        scalars(msgpack_only),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(keys, inner, max_size=4),
        ),
        max_leaves=12,
    )


def deep(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


@st.composite
def message(draw: st.DrawFn, *, bot: bool, msgpack_only: bool) -> dict[Any, Any]:
    """A map that looks like a message: a known (or unknown) type and fields of any shape."""
    types = BOT_TYPES if bot else VIEWER_TYPES
    msg: dict[Any, Any] = {"type": draw(st.one_of(st.sampled_from(types), TEXT, values(False)))}
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        msg[key] = draw(
            st.one_of(
                values(msgpack_only),
                st.lists(EDGE_NUMBERS, min_size=3, max_size=3),  # cells, positions
                st.lists(EDGE_NUMBERS, min_size=4, max_size=4),  # areas
                st.sampled_from([deep(31), deep(32), deep(33), deep(200)]),
                st.just({"solid": [[0, 0, 0], [1, 0, 0]]}),
                st.just({"origin": [0, 0, 0], "size": [4, 1, 4], "solid": "//8="}),
            )
        )
    if draw(st.booleans()) and msgpack_only:
        msg[draw(st.integers(-3, 3))] = draw(scalars(True))
    return msg


def encode(value: Any, as_msgpack: bool) -> bytes | str:
    if as_msgpack:
        return msgpack.packb(value, use_bin_type=True)
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson cannot write it (e.g. 200 levels deep): send it by hand
        return '{"type":"event","name":"deep","data":' + '{"a":' * 300 + "1" + "}" * 300 + "}"


@st.composite
def frame(draw: st.DrawFn, *, bot: bool, as_msgpack: bool) -> bytes | str:
    """One frame as sent: mostly message-shaped, sometimes garbage or the wrong frame type."""
    kind = draw(st.sampled_from(["message"] * 14 + ["raw", "wrong_type", "not_map", "big"]))
    if kind == "message":
        return encode(draw(message(bot=bot, msgpack_only=as_msgpack)), as_msgpack)
    if kind == "raw":
        return draw(st.binary(max_size=64)) if as_msgpack else draw(st.text(max_size=64))
    if kind == "wrong_type":  # text on msgpack, binary on JSON: bad_encoding
        return draw(st.text(max_size=16)) if as_msgpack else draw(st.binary(max_size=16))
    if kind == "not_map":
        return encode(draw(values(as_msgpack)), as_msgpack)
    # Around the frame limit: exactly 64 KiB is accepted, one more byte closes with 1009.
    size = draw(st.sampled_from([MAX_FRAME_BYTES - 1, MAX_FRAME_BYTES, MAX_FRAME_BYTES + 1]))
    body = {"type": "ping", "pad": ""}
    empty = len(encode(body, as_msgpack))
    body["pad"] = "p" * (size - empty - (2 if as_msgpack else 0))
    return encode(body, as_msgpack)
