"""Contract v1 on the wire, sans I/O: encodings, message validation and construction, error
and close codes.

Nothing here touches a socket or a clock. `decode` turns a frame into a map; `message_type`
and the `parse_*` functions check what a client sent (or raise :class:`ProtocolError`); the
builders (`bot_welcome`, `pong`, `snapshot`, `positions_frame`, …) make what the gateway
sends; `encode` turns a map into frame bytes. The session handlers are thin adaptors around
this.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from enum import IntEnum, StrEnum
from typing import Any

import msgpack
import orjson

from gateway import PROTOCOL_VERSION
from gateway.types import MetricRow, PositionUpdate

MAX_FRAME_BYTES = 64 * 1024  # inclusive: a frame of exactly this size is accepted
MAX_DEPTH = 32  # nesting of event data, command args, profiles (the value itself is level 1)
MAX_COORD = 30_000_000
MIN_Y, MAX_Y = -2048, 2048
MAX_NAME = 64
MAX_DIM = 64
MAX_TOKEN = 4096  # characters of a refresh token (a JWT is a few hundred)
DEFAULT_DIM = "overworld"
MIN_INT, MAX_INT_EXCLUSIVE = -(2**63), 2**64  # what both encodings carry
MAX_TS_MS = 2**53  # exact in every encoding and in a float; far past any real clock

STATUS_RE = re.compile(r"[a-z0-9_-]{1,32}")
NPC_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
COMMAND_ID_RE = re.compile(r"[0-9a-f]{32}")  # what CommandRouter issues (uuid4 hex)


class Encoding(StrEnum):
    JSON = "aicraft.v1.json"
    MSGPACK = "aicraft.v1.msgpack"


SUBPROTOCOLS = (Encoding.JSON.value, Encoding.MSGPACK.value)


class ErrorCode(StrEnum):
    BAD_ENCODING = "bad_encoding"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_TYPE = "unknown_type"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    UNAUTHORIZED = "unauthorized"  # §2: a refresh token that is not acceptable


class CloseCode(IntEnum):
    GOING_AWAY = 1001
    POLICY = 1008
    TOO_BIG = 1009
    TOKEN_EXPIRED = 4401  # §2: the connection's token reached its `exp`
    DELETED = 4404
    REPLACED = 4409


Message = dict[str, Any]  # one message, before `encode` or after `decode`


class ProtocolError(Exception):
    """A frame or message the contract rejects; becomes an `error` message to the sender."""

    def __init__(self, code: ErrorCode, message: str, ref: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def to_message(self) -> Message:
        return error(self.code, self.message, self.ref)


# -- codec ---------------------------------------------------------------------------------------


def encode(message: Any, encoding: Encoding) -> bytes:
    """Frame payload for `message` (UTF-8 JSON for text frames, or msgpack)."""
    if encoding is Encoding.JSON:
        return orjson.dumps(message)
    return msgpack.packb(message, use_bin_type=True)


def decode(data: bytes | str, encoding: Encoding) -> dict[str, Any]:
    """The map a frame carries; `bad_encoding` if it does not parse, `bad_message` if no map."""
    try:
        if encoding is Encoding.JSON:
            value = orjson.loads(data)
        else:
            if isinstance(data, str):
                raise ValueError("text frame on the msgpack subprotocol")
            value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise ProtocolError(ErrorCode.BAD_ENCODING, f"frame is not valid {encoding.name}") from None
    if type(value) is not dict:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a message must be a map")
    return value


def negotiate(offered: list[str]) -> Encoding:
    """The encoding for the client's offered subprotocols; JSON when none matches."""
    for name in offered:
        if name == Encoding.MSGPACK.value:
            return Encoding.MSGPACK
        if name == Encoding.JSON.value:
            return Encoding.JSON
    return Encoding.JSON


# -- field checks --------------------------------------------------------------------------------


def _ref(msg: dict[str, Any]) -> Any:
    ref = msg.get("ref")
    if ref is None:
        return None
    if type(ref) is int or (type(ref) is str and len(ref) <= 128):
        return ref
    raise ProtocolError(ErrorCode.BAD_MESSAGE, "ref must be a string (≤128) or an integer")


def _number(msg: dict[str, Any], key: str, ref: Any, *, keep_int: bool = False) -> float:
    """A finite number (never a bool); an integer comes back as a float unless `keep_int`."""
    value = msg.get(key)
    # `type(...) in` rejects bool (a subclass of int) and every other look-alike.
    if type(value) is float:
        if math.isfinite(value):
            return value
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{key} must be finite", ref)
    if type(value) is int:
        return value if keep_int else float(value)
    if value is None:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{key} is required (a number)", ref)
    raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{key} must be a number", ref)


def _string(msg: dict[str, Any], key: str, ref: Any, max_len: int) -> str:
    value = msg.get(key)
    if type(value) is not str or not 0 < len(value) <= max_len or "\x00" in value:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{key} must be a string of 1-{max_len}", ref)
    return value


def clean_text(value: Any, max_len: int) -> bool:
    """A non-empty string of at most `max_len` that a database can store (no NUL)."""
    return type(value) is str and 0 < len(value) <= max_len and "\x00" not in value


# -- bot messages --------------------------------------------------------------------------------


def parse_position(msg: dict[str, Any], npc_id: str, ref: Any) -> PositionUpdate:
    """The validated update of a `pos` message (the hot path: most frames are these).

    Numbers stay as the bot sent them: an integer is not widened to a float, so viewers get
    `64`, not `64.0` (fewer bytes to send and to parse, and what JavaScript bots send for any
    whole number)."""
    x, y, z = msg.get("x"), msg.get("y"), msg.get("z")
    yaw, pitch, dim = msg.get("yaw", 0.0), msg.get("pitch", 0.0), msg.get("dim", DEFAULT_DIM)
    # Fast path for the common shape: numbers in range. `type(v) in _NUMBERS` rejects bool;
    # NaN fails every comparison and `v - v == 0` fails for inf and NaN, so anything unusual
    # takes the checked path below.
    if (
        type(x) in _NUMBERS
        and type(y) in _NUMBERS
        and type(z) in _NUMBERS
        and type(yaw) in _NUMBERS
        and type(pitch) in _NUMBERS
        and type(dim) is str
        and -MAX_COORD <= x <= MAX_COORD
        and -MAX_COORD <= z <= MAX_COORD
        and MIN_Y <= y <= MAX_Y
        and yaw - yaw == 0
        and pitch - pitch == 0
        and 0 < len(dim) <= MAX_DIM
        and "\x00" not in dim
    ):
        return {"id": npc_id, "x": x, "y": y, "z": z, "yaw": yaw, "pitch": pitch, "dim": dim}
    return _parse_position_checked(msg, npc_id, ref)


_NUMBERS = (float, int)


def _parse_position_checked(msg: dict[str, Any], npc_id: str, ref: Any) -> PositionUpdate:
    x = _number(msg, "x", ref, keep_int=True)
    y = _number(msg, "y", ref, keep_int=True)
    z = _number(msg, "z", ref, keep_int=True)
    if not (-MAX_COORD <= x <= MAX_COORD and -MAX_COORD <= z <= MAX_COORD and MIN_Y <= y <= MAX_Y):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "position out of the world's range", ref)
    dim = msg.get("dim")
    if dim is None:
        dim = DEFAULT_DIM
    elif not clean_text(dim, MAX_DIM):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"dim must be a string of 1-{MAX_DIM}", ref)
    yaw, pitch = msg.get("yaw"), msg.get("pitch")
    return {
        "id": npc_id,
        "x": x,
        "y": y,
        "z": z,
        "yaw": 0.0 if yaw is None else _number(msg, "yaw", ref, keep_int=True),
        "pitch": 0.0 if pitch is None else _number(msg, "pitch", ref, keep_int=True),
        "dim": dim,
    }


def parse_status(msg: dict[str, Any], ref: Any) -> str:
    status = msg.get("status")
    if type(status) is not str or not STATUS_RE.fullmatch(status):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "status must match [a-z0-9_-]{1,32}", ref)
    return status


def parse_metric(msg: dict[str, Any], npc_id: str, ref: Any, now_ms: int) -> MetricRow:
    name = _string(msg, "name", ref, MAX_NAME)
    value = _number(msg, "value", ref)
    ts = msg.get("ts")
    if ts is None:
        ts_ms = now_ms
    else:
        ts_ms = int(_number(msg, "ts", ref))
        if not 0 <= ts_ms <= MAX_TS_MS:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "ts must be epoch milliseconds", ref)
    return MetricRow(npc_id, name, value, ts_ms)


def json_value_problem(value: Any, depth: int = 1) -> str | None:
    """Why `value` cannot travel in both encodings (§5), or None when it can.

    Checked where values enter, because a value orjson cannot write (bytes, ext types,
    non-string keys, NaN, nesting past 254) would otherwise fail only when it is forwarded.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return None
    if kind is int:
        return None if MIN_INT <= value < MAX_INT_EXCLUSIVE else "integers must be in [-2^63, 2^64)"
    if kind is float:
        return None if value - value == 0.0 else "numbers must be finite"
    if kind is dict or kind is list:
        if depth > MAX_DEPTH:
            return f"values may be nested at most {MAX_DEPTH} deep"
        if kind is dict:
            for key in value:
                if type(key) is not str:
                    return "map keys must be strings"
            items = value.values()
        else:
            items = value
        for item in items:
            problem = json_value_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    return f"{kind.__name__} values cannot be carried as JSON"


def check_json_map(value: Any, what: str, ref: Any = None) -> dict[str, Any]:
    """`value` if it is a map JSON can carry; `bad_message` otherwise."""
    if type(value) is not dict:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{what} must be a map", ref)
    problem = json_value_problem(value)
    if problem is not None:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{what}: {problem}", ref)
    return value


def parse_event(msg: dict[str, Any], ref: Any) -> tuple[str, dict[str, Any]]:
    name = _string(msg, "name", ref, MAX_NAME)
    data = msg.get("data")
    if data is None:
        return name, {}
    return name, check_json_map(data, "data", ref)


def parse_ack(msg: dict[str, Any], ref: Any) -> str:
    cid = msg.get("id")
    if type(cid) is int or (type(cid) is str and 0 < len(cid) <= 128):
        return str(cid)
    raise ProtocolError(ErrorCode.BAD_MESSAGE, "id must be a command id", ref)


def parse_auth(msg: dict[str, Any], ref: Any) -> str:
    """The token of an `auth` (refresh in place, §2)."""
    tok = msg.get("token")
    if type(tok) is str and 0 < len(tok) <= MAX_TOKEN:
        return tok
    raise ProtocolError(ErrorCode.BAD_MESSAGE, "token must be a non-empty string", ref)


BOT_TYPES = frozenset(
    {
        "pos",
        "status",
        "metric",
        "event",
        "path",
        "mining_plan",
        "ping",
        "ack",
        "auth",
        "chunk",  # §9: the world model
        "blocks",
    }
)
VIEWER_TYPES = frozenset({"subscribe", "ping", "auth"})


def message_type(msg: dict[str, Any], allowed: frozenset[str]) -> tuple[str, Any]:
    """The message's `type` and `ref`, checked against the types this endpoint takes."""
    ref = _ref(msg)
    kind = msg.get("type")
    if type(kind) is not str:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "type must be a string", ref)
    if kind not in allowed:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}", ref)
    return kind, ref


# -- viewer messages -----------------------------------------------------------------------------

Area = tuple[float, float, float, float]  # x0, z0, x1, z1 with x0 <= x1 and z0 <= z1


def parse_subscribe(msg: dict[str, Any], ref: Any) -> tuple[str | None, Area | None]:
    """(dim, area) of a `subscribe`; (None, None) restores everything."""
    area = msg.get("area")
    dim = msg.get("dim")
    if area is None:
        if dim is not None and (type(dim) is not str or not 0 < len(dim) <= MAX_DIM):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "dim must be a string", ref)
        return (dim if area is None and dim is not None else None), None
    if type(area) is not list or len(area) != 4:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "area must be [x0, z0, x1, z1]", ref)
    nums = []
    for value in area:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "area must hold four finite numbers", ref)
        nums.append(float(value))
    x0, z0, x1, z1 = nums
    if dim is None:
        dim = DEFAULT_DIM
    elif type(dim) is not str or not 0 < len(dim) <= MAX_DIM:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "dim must be a string", ref)
    return dim, (min(x0, x1), min(z0, z1), max(x0, x1), max(z0, z1))


MAX_EPOCH = 64
Since = tuple[str, int]  # (epoch, seq) a viewer resumes after


def parse_since(raw: Any, ref: Any = None) -> Since | None:
    """`since` of a `subscribe` ({"epoch": E, "seq": S}) or of the URL ("E:S"); None if absent."""
    if raw is None:
        return None
    if type(raw) is str:
        epoch, sep, seq_text = raw.rpartition(":")
        if not sep or not seq_text.isdigit() or len(seq_text) > 19:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "since must be EPOCH:SEQ", ref)
        raw = {"epoch": epoch, "seq": int(seq_text)}
    if type(raw) is not dict:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "since must be {epoch, seq}", ref)
    epoch, seq = raw.get("epoch"), raw.get("seq")
    if type(epoch) is not str or not 0 < len(epoch) <= MAX_EPOCH:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"since.epoch must be 1-{MAX_EPOCH} chars", ref)
    if type(seq) is not int or not 0 <= seq < 2**63:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "since.seq must be an integer >= 0", ref)
    return epoch, seq


def in_view(update: dict[str, Any], dim: str | None, area: Area | None) -> bool:
    """Whether a viewer subscribed to (dim, area) receives this NPC state."""
    if dim is not None and update.get("dim") != dim:
        return False
    if area is None:
        return True
    x, z = update.get("x"), update.get("z")
    if x is None or z is None:
        return False
    return area[0] <= x <= area[2] and area[1] <= z <= area[3]


# -- gateway → client messages (§4, §11) --------------------------------------------------------


def _with_ref(message: Message, ref: Any) -> Message:
    """A reply carries the `ref` of the message it answers, when that one had a valid one."""
    if ref is not None:
        message["ref"] = ref
    return message


def error(code: ErrorCode, message: str, ref: Any = None) -> Message:
    return _with_ref({"type": "error", "code": code.value, "message": message}, ref)


def bot_welcome(npc: str, replica: str, tick_ms: int) -> Message:
    """The first message on a bot's connection."""
    return {
        "type": "welcome",
        "npc": npc,
        "replica": replica,
        "tick_ms": tick_ms,
        "protocol": PROTOCOL_VERSION,
    }


def viewer_welcome(replica: str, tick_ms: int) -> Message:
    """The first message on a viewer's connection."""
    return {"type": "welcome", "replica": replica, "tick_ms": tick_ms, "protocol": PROTOCOL_VERSION}


def pong(ref: Any = None) -> Message:
    return _with_ref({"type": "pong"}, ref)


def auth_ok(exp: int, ref: Any = None) -> Message:
    """A token refreshed in place: the connection now lasts until `exp` (epoch seconds)."""
    return _with_ref({"type": "auth_ok", "exp": exp}, ref)


def job_result(kind: str, ref: Any, **fields: Any) -> Message:
    """The answer to a `path` or `mining_plan` (`kind`: `path_result`, `mining_plan_result`)."""
    message = _with_ref({"type": kind}, ref)
    message.update(fields)
    return message


def command(command_id: str, action: str, args: dict[str, Any]) -> Message:
    return {"type": "command", "id": command_id, "action": action, "args": args}


def snapshot(npcs: list[dict[str, Any]]) -> Message:
    return {"type": "snapshot", "npcs": npcs}


def positions_frame(updates: Mapping[str, PositionUpdate], ts_ms: int, encoding: Encoding) -> bytes:
    """The encoded `positions` frame of a window (NPC id → its latest update)."""
    return encode({"type": "positions", "ts": ts_ms, "updates": list(updates.values())}, encoding)


def status(npc: str, value: str) -> Message:
    return {"type": "status", "id": npc, "status": value}


def online_change(kind: str, npc: str) -> Message:
    """`joined` or `left` (the `kind`): an NPC's bot connected to / went from any replica."""
    return {"type": kind, "id": npc}


def event(npc: str, name: str, data: dict[str, Any]) -> Message:
    """A bot's event as viewers get it (the history adds `epoch` and `seq`)."""
    return {"type": "event", "npc": npc, "name": name, "data": data}


def recovered(count: int | None) -> Message:
    """The answer to a `since`: `count` events follow, or None when the history no longer
    reaches back (a fresh snapshot follows instead)."""
    if count is None:
        return {"type": "recovered", "ok": False}
    return {"type": "recovered", "ok": True, "count": count}
