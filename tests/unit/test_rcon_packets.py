"""The RCON packet codec, URL parsing and command checks: pure functions, no sockets."""

from __future__ import annotations

import struct

import pytest

from gateway.bridge import (
    MAX_COMMAND_BYTES,
    Packet,
    PacketType,
    RconProtocolError,
    decode_length,
    decode_packet,
    decode_payload,
    encode_packet,
    parse_rcon_url,
    validate_command,
)


def test_encode_login_matches_the_wire_format_byte_for_byte() -> None:
    data = encode_packet(7, PacketType.LOGIN, "pw")
    assert data == b"".join(
        [
            b"\x0c\x00\x00\x00",  # length 12 = id 4 + type 4 + "pw" 2 + two NULs
            b"\x07\x00\x00\x00",  # request id 7, little-endian
            b"\x03\x00\x00\x00",  # type 3: login
            b"pw\x00\x00",
        ]
    )


def test_encode_empty_body_is_the_minimum_packet() -> None:
    data = encode_packet(1, 200)
    assert len(data) == 14
    assert struct.unpack("<iii", data[:12]) == (10, 1, 200)
    assert data[12:] == b"\x00\x00"


@pytest.mark.parametrize(
    ("request_id", "packet_type", "body"),
    [
        (1, PacketType.COMMAND, "list"),
        (-1, PacketType.COMMAND, ""),  # auth failure reply
        (2**31 - 1, PacketType.RESPONSE, "x" * 4096),
        (42, PacketType.RESPONSE, "héllo ☃"),
    ],
)
def test_round_trip(request_id: int, packet_type: int, body: str) -> None:
    packet = decode_packet(encode_packet(request_id, packet_type, body))
    assert packet == Packet(request_id, packet_type, body.encode())
    assert packet.text == body


def test_decode_payload_splits_id_type_body() -> None:
    payload = struct.pack("<ii", 5, 0) + b"There are 0 players\x00\x00"
    assert decode_payload(payload) == Packet(5, 0, b"There are 0 players")


def test_text_replaces_invalid_utf8() -> None:
    assert Packet(1, 0, b"ok \xff").text == "ok \ufffd"


def test_encode_rejects_nul_in_body() -> None:
    with pytest.raises(ValueError):
        encode_packet(1, PacketType.COMMAND, "say a\x00b")


@pytest.mark.parametrize("length", [0, 9, -1, (1 << 20) + 1, 0x50545448])  # last: "HTTP"
def test_decode_length_rejects_out_of_range(length: int) -> None:
    with pytest.raises(RconProtocolError):
        decode_length(struct.pack("<i", length))


def test_decode_length_needs_four_bytes() -> None:
    with pytest.raises(RconProtocolError):
        decode_length(b"\x0a\x00")


def test_decode_rejects_missing_terminator() -> None:
    with pytest.raises(RconProtocolError):
        decode_payload(struct.pack("<ii", 1, 0) + b"abc\x00x")


def test_decode_rejects_short_payload() -> None:
    with pytest.raises(RconProtocolError):
        decode_payload(b"\x00" * 9)


def test_decode_packet_rejects_length_mismatch() -> None:
    data = encode_packet(1, 0, "abc")
    with pytest.raises(RconProtocolError):
        decode_packet(data + b"\x00")
    with pytest.raises(RconProtocolError):
        decode_packet(data[:-1])


def test_parse_url_with_defaults_and_escapes() -> None:
    target = parse_rcon_url("rcon://:p%40ss%3Aword@mc.example.org")
    assert (target.host, target.port, target.password) == ("mc.example.org", 25575, "p@ss:word")
    target = parse_rcon_url("rcon://:pw@[::1]:25580")
    assert (target.host, target.port) == ("::1", 25580)
    assert "pw" not in repr(target)


@pytest.mark.parametrize(
    "url",
    [
        "http://:pw@host:25575",
        "rcon://host:25575",  # no password
        "rcon://pw@host:25575",  # password in the user slot
        "rcon://:pw@:25575",
        "rcon://:pw@host:notaport",
    ],
)
def test_parse_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        parse_rcon_url(url)


def test_validate_command() -> None:
    validate_command("say hi")
    validate_command("x" * MAX_COMMAND_BYTES)
    for bad in ["", "say \x00", "x" * (MAX_COMMAND_BYTES + 1), "é" * (MAX_COMMAND_BYTES // 2 + 1)]:
        with pytest.raises(ValueError):
            validate_command(bad)
