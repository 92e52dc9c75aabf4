"""gateway.bus.messages: every kind survives the wire, echoes are told by their first bytes,
and anything that is not a message is a `BadMessage`, never another exception."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.bus.messages import (
    EVERYONE,
    KINDS,
    Alive,
    BadMessage,
    Command,
    CommandOutcome,
    Deleted,
    Drain,
    Joined,
    Kick,
    Left,
    Message,
    Online,
    PositionsWindow,
    Status,
    Sync,
    WorldSections,
    decode,
    encode,
    sender_prefix,
)

# Arrays decode as tuples: the examples are written so.
EXAMPLES: list[Message] = [
    PositionsWindow(ts=1_765_000_000_123, rows=(("n1", 1.5, 64.0, -3.25, 90.0, -10.0, "nether"),)),
    PositionsWindow(ts=0, rows=()),
    WorldSections(rows=(("overworld", 1, 4, -2, bytes(range(256)) * 2),)),
    Alive(),
    Sync(to=EVERYONE),
    Sync(to="replica-b"),
    Online(npcs=("n1", "n2")),
    Online(npcs=()),
    Joined(npc="n1"),
    Left(npc="n1", ts=1_765_000_000_123),
    Status(npc="n1", status="mining"),
    Deleted(npc="n1"),
    Kick(npc="n1"),
    Drain(npc="n1"),
    Command(
        npc="n1",
        frame={"type": "command", "id": "c1", "action": "goto", "args": {"to": (1, 2, 3)}},
    ),
    CommandOutcome(command_id="c1", outcome="not_reading"),
]


def test_every_kind_has_an_example() -> None:
    assert {type(m) for m in EXAMPLES} == set(KINDS)
    assert len({cls.kind for cls in KINDS}) == len(KINDS)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    assert decode(encode("replica-a", message)) == ("replica-a", message)


@given(
    ts=st.integers(min_value=0, max_value=2**63 - 1),
    rows=st.lists(
        st.tuples(
            st.text(max_size=40),
            *(st.floats(allow_nan=False) for _ in range(5)),
            st.sampled_from(["overworld", "the_nether", "the_end"]),
        ),
        max_size=20,
    ),
    sender=st.text(max_size=300),
)
def test_positions_round_trip(ts: int, rows: list[tuple], sender: str) -> None:
    window = PositionsWindow(ts=ts, rows=tuple(rows))
    assert decode(encode(sender, window)) == (sender, window)


def test_a_window_is_no_bigger_than_its_rows() -> None:
    """The hot path: one envelope, no keys; a few bytes beyond the packed rows."""
    rows = [(f"npc-{i:05d}", 1.0, 2.0, 3.0, 4.0, 5.0, "overworld") for i in range(1000)]
    payload = encode("replica-a", PositionsWindow(ts=1_765_000_000_000, rows=rows))
    assert len(payload) - len(msgpack.packb(rows)) <= 32


@pytest.mark.parametrize("sender", ["a", "replica-1", "r" * 40, "r" * 300, "é"])
def test_own_messages_are_told_by_their_first_bytes(sender: str) -> None:
    own = sender_prefix(sender)
    for message in EXAMPLES:
        assert encode(sender, message).startswith(own)
        # Another replica whose name starts the same, or is a prefix of ours, is not us.
        assert not encode(sender + "x", message).startswith(own)
        assert not encode(sender[:-1], message).startswith(own)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"", "not msgpack"),
        (b"\xc1", "not msgpack"),  # never used by msgpack
        (msgpack.packb(["a", ["alive"]]) + b"\x00", "not msgpack"),  # trailing bytes
        (msgpack.packb({"r": "a", "k": "alive"}), "envelope"),  # the old format
        (msgpack.packb(["a"]), "envelope"),
        (msgpack.packb(["a", ["alive"], 3]), "envelope"),
        (msgpack.packb([7, ["alive"]]), "envelope"),
        (msgpack.packb(["a", "alive"]), "envelope"),
        (msgpack.packb(["a", []]), "envelope"),
        (msgpack.packb(["a", [3]]), "envelope"),
        (msgpack.packb(["a", ["gossip"]]), "unknown kind 'gossip'"),
        (msgpack.packb(["a", ["kick"]]), "'kick' with 0 fields, not 1"),
        (msgpack.packb(["a", ["alive", 1]]), "'alive' with 1 fields, not 0"),
    ],
)
def test_malformed_payloads_are_bad_messages(payload: bytes, why: str) -> None:
    with pytest.raises(BadMessage, match=why):
        decode(payload)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_bad_message(payload: bytes) -> None:
    try:
        decode(payload)
    except BadMessage:
        pass


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.text(max_size=10)
        | st.binary(max_size=10),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=12,
    )
)
def test_any_msgpack_value_decodes_or_raises_bad_message(value: object) -> None:
    for envelope in (value, ["a", value], ["a", ["kick", value]], ["a", ["pos", 1, value]]):
        payload = msgpack.packb(envelope)
        try:
            decode(payload)
        except BadMessage:
            pass
