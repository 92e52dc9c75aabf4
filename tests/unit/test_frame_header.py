"""write_now's frame header, read back by an independent WebSocket parser (websockets')."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from gateway.direct_ws import frame_header


def _parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("the parser wants more bytes than the frame has")


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65_535, 65_536, 300_000])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_a_frame_reads_back_whole_at_every_length_boundary(length: int, opcode: Opcode) -> None:
    payload = (bytes(range(256)) * (length // 256 + 1))[:length]
    frame = _parse(frame_header(opcode.value, length) + payload + b"next frame")
    assert (frame.opcode, frame.fin, frame.data) == (opcode, True, payload)
