"""The sans-I/O contract core: codec round trips and validation that never crashes."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocol import (
    BOT_TYPES,
    Encoding,
    ErrorCode,
    ProtocolError,
    auth_ok,
    bot_welcome,
    command,
    decode,
    encode,
    error,
    event,
    in_view,
    message_type,
    negotiate,
    online_change,
    parse_event,
    parse_metric,
    parse_position,
    parse_status,
    parse_subscribe,
    pong,
    positions_frame,
    recovered,
    snapshot,
    status,
    viewer_welcome,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "type",
    "x",
    "y",
    "z",
    "yaw",
    "pitch",
    "dim",
    "status",
    "name",
    "value",
    "ts",
    "data",
    "ref",
    "id",
    "area",
    "npc",
]
messages = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=5), json_values, max_size=8
) | st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(BOT_TYPES))}, optional={k: json_values for k in FIELDS[1:]}
)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_codec_round_trip(encoding: Encoding) -> None:
    msg = {"type": "positions", "ts": 1, "updates": [{"id": "a", "x": 1.5, "y": -2.0}]}
    assert decode(encode(msg, encoding), encoding) == msg


def test_decode_rejects_what_is_not_the_negotiated_encoding() -> None:
    with pytest.raises(ProtocolError) as err:
        decode(b"\x81\xa4type\xa3pos", Encoding.JSON)
    assert err.value.code is ErrorCode.BAD_ENCODING
    with pytest.raises(ProtocolError) as err:
        decode('{"type":"pos"}', Encoding.MSGPACK)
    assert err.value.code is ErrorCode.BAD_ENCODING
    with pytest.raises(ProtocolError) as err:
        decode(b"[1,2]", Encoding.JSON)
    assert err.value.code is ErrorCode.BAD_MESSAGE


def test_json_nan_literal_is_bad_encoding() -> None:
    with pytest.raises(ProtocolError) as err:
        decode(b'{"type":"pos","x":NaN,"y":1,"z":1}', Encoding.JSON)
    assert err.value.code is ErrorCode.BAD_ENCODING


def test_negotiate_prefers_what_the_client_offered_first() -> None:
    assert negotiate([]) is Encoding.JSON
    assert negotiate(["other", "aicraft.v1.msgpack"]) is Encoding.MSGPACK
    assert negotiate(["aicraft.v1.json", "aicraft.v1.msgpack"]) is Encoding.JSON


def test_position_defaults_and_ranges() -> None:
    pos = parse_position({"x": 1, "y": 2, "z": 3}, "a", None)
    assert pos == {
        "id": "a",
        "x": 1.0,
        "y": 2.0,
        "z": 3.0,
        "yaw": 0.0,
        "pitch": 0.0,
        "dim": "overworld",
    }
    assert parse_position({"x": 3e7, "y": -2048, "z": -3e7}, "a", None)["y"] == -2048
    for bad in (
        {"x": 3e7 + 1, "y": 0, "z": 0},
        {"x": 0, "y": 2049, "z": 0},
        {"x": 0, "y": 0, "z": math.nan},
        {"x": False, "y": 0, "z": 0},
        {"x": "1", "y": 0, "z": 0},
        {"x": 0, "y": 0, "z": 0, "yaw": math.inf},
        {"x": 0, "y": 0, "z": 0, "dim": ""},
    ):
        with pytest.raises(ProtocolError) as err:
            parse_position(bad, "a", "r")
        assert err.value.code is ErrorCode.BAD_MESSAGE and err.value.ref == "r"


def test_a_position_keeps_the_numbers_the_bot_sent() -> None:
    """Whole numbers stay integers on the way to viewers: `64`, not `64.0`."""
    pos = parse_position({"x": 12.5, "y": 64, "z": -3, "yaw": 90, "pitch": 0.0}, "a", None)
    assert [type(pos[k]) for k in ("x", "y", "z", "yaw", "pitch")] == [float, int, int, int, float]
    frame = positions_frame({"a": pos}, 1, Encoding.JSON)
    assert b'"y":64,"z":-3,"yaw":90,"pitch":0.0' in frame
    with pytest.raises(ProtocolError):
        parse_position({"x": 1, "y": True, "z": 3}, "a", None)


def test_status_metric_event_rules() -> None:
    assert parse_status({"status": "mining_2"}, None) == "mining_2"
    with pytest.raises(ProtocolError):
        parse_status({"status": "x" * 33}, None)
    row = parse_metric({"name": "hp", "value": 20}, "a", None, now_ms=5)
    assert (row.npc, row.name, row.value, row.ts) == ("a", "hp", 20.0, 5)
    with pytest.raises(ProtocolError):
        parse_metric({"name": "n" * 65, "value": 1}, "a", None, now_ms=5)
    assert parse_event({"name": "chat"}, None) == ("chat", {})
    with pytest.raises(ProtocolError):
        parse_event({"name": "chat", "data": "text"}, None)


def test_subscribe_and_view() -> None:
    assert parse_subscribe({}, None) == (None, None)
    dim, area = parse_subscribe({"dim": "the_end", "area": [10, 10, -10, -10]}, None)
    assert dim == "the_end" and area == (-10.0, -10.0, 10.0, 10.0)
    update = {"x": 0.0, "z": 5.0, "dim": "the_end"}
    assert in_view(update, dim, area) and not in_view(update, "overworld", area)
    with pytest.raises(ProtocolError):
        parse_subscribe({"area": [0, 0, 1]}, None)


def _validate(msg: dict[str, Any]) -> None:
    kind, ref = message_type(msg, BOT_TYPES)
    if kind == "pos":
        parse_position(msg, "npc", ref)
    elif kind == "status":
        parse_status(msg, ref)
    elif kind == "metric":
        parse_metric(msg, "npc", ref, 0)
    elif kind == "event":
        parse_event(msg, ref)


@settings(max_examples=400)
@given(messages)
def test_no_map_crashes_the_validator(msg: dict[str, Any]) -> None:
    try:
        _validate(msg)
    except ProtocolError as err:
        assert err.code in set(ErrorCode) and err.message


@settings(max_examples=300)
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_no_bytes_crash_the_decoder(data: bytes) -> None:
    for encoding in Encoding:
        try:
            msg = decode(data, encoding)
        except ProtocolError:
            continue
        assert isinstance(msg, dict)


@given(messages)
def test_valid_positions_survive_both_encodings(msg: dict[str, Any]) -> None:
    try:
        pos = parse_position(msg, "npc", None)
    except ProtocolError:
        return
    assert orjson.loads(orjson.dumps(pos)) == pos
    assert msgpack.unpackb(msgpack.packb(pos)) == pos


@settings(max_examples=500)
@given(
    st.fixed_dictionaries(
        {k: st.floats() | st.integers(-(2**40), 2**40) for k in ("x", "y", "z")},
        optional={
            "yaw": st.floats() | st.integers(-(2**63), 2**64 - 1) | st.booleans() | st.none(),
            "pitch": st.floats() | st.integers() | st.booleans(),
            "dim": st.text(max_size=70) | st.none(),
        },
    )
)
def test_fast_and_checked_position_paths_agree(msg: dict[str, Any]) -> None:
    from gateway.protocol import _parse_position_checked

    def outcome(fn: Any) -> Any:
        try:
            update = fn(msg, "n", None)
        except ProtocolError as err:
            return err.code
        return {key: (type(value), value) for key, value in update.items()}  # 1 is not 1.0

    assert outcome(parse_position) == outcome(_parse_position_checked)


# -- what the gateway sends, against the examples of docs/protocol.md ----------------------------

PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _examples(heading: str) -> dict[str, dict[str, Any]]:
    """The example messages of the first ```json block after `heading`, by type."""
    text = PROTOCOL_DOC.read_text()
    block = re.search(r"```json\n(.*?)```", text[text.index(heading) :], re.S)
    assert block is not None, heading
    messages = [orjson.loads(line) for line in block.group(1).splitlines() if line]
    return {m["type"]: m for m in messages}


def test_messages_to_bots_have_the_documented_shape() -> None:
    doc = _examples("## 4. Gateway → bot")
    # Same keys in the same order (JSON shows them as written), same values.
    for built, documented in [
        (bot_welcome("miner-1", "gw-a", 500), doc["welcome"]),
        (command(doc["command"]["id"], "goto", {"x": 10, "y": 64, "z": -3}), doc["command"]),
        (pong(42), doc["pong"]),
        (error(ErrorCode.BAD_MESSAGE, "x must be a number", 7), doc["error"]),
    ]:
        assert list(built.items()) == list(documented.items())
    assert pong() == {"type": "pong"}  # no ref on the ping, none on the pong
    assert error(ErrorCode.BUSY, "later") == {"type": "error", "code": "busy", "message": "later"}
    assert ProtocolError(ErrorCode.FORBIDDEN, "no", 3).to_message() == error(
        ErrorCode.FORBIDDEN, "no", 3
    )


def test_messages_to_viewers_have_the_documented_shape() -> None:
    doc = _examples("### Gateway → viewer")
    numbered = {"epoch": doc["event"]["epoch"], "seq": doc["event"]["seq"]}  # the history's
    for built, documented in [
        (viewer_welcome("gw-a", 500), doc["welcome"]),
        (snapshot(doc["snapshot"]["npcs"]), doc["snapshot"]),
        (status("miner-1", "returning"), doc["status"]),
        (online_change("joined", "miner-2"), doc["joined"]),
        (online_change("left", "miner-2"), doc["left"]),
        ({**event("miner-1", "task:done", {"ore": "iron"}), **numbered}, doc["event"]),
    ]:
        assert list(built.items()) == list(documented.items())


@pytest.mark.parametrize("encoding", list(Encoding))
def test_the_positions_frame_is_the_documented_one(encoding: Encoding) -> None:
    documented = _examples("### Gateway → viewer")["positions"]
    updates = {u["id"]: u for u in documented["updates"]}
    frame = positions_frame(updates, documented["ts"], encoding)
    assert decode(frame, encoding) == documented
    if encoding is Encoding.JSON:
        assert frame == orjson.dumps(documented)


def test_recovered_and_auth_ok() -> None:
    assert recovered(3) == {"type": "recovered", "ok": True, "count": 3}
    assert recovered(None) == {"type": "recovered", "ok": False}
    assert auth_ok(1767225600, 1) == {"type": "auth_ok", "exp": 1767225600, "ref": 1}
    assert auth_ok(1767225600) == {"type": "auth_ok", "exp": 1767225600}
