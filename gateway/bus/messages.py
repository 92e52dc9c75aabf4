"""What replicas tell each other over the bus: typed messages, their envelope, their codec. Pure.

Every payload is one msgpack envelope `[sender, [kind, *fields]]`: the replica that sent it, and
the message as its kind and its fields in declaration order (no keys: position windows, one per
region per tick, are the hot path). All replicas upgrade together; there is no versioning.

The sender comes first so that a backend which hears its own messages (Redis echoes them to
every subscriber) drops them by their first bytes, before anyone decodes them (`sender_prefix`).
That is the only echo filter: `decode` does not filter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import msgpack

if TYPE_CHECKING:
    from gateway.world.model import SectionRow

# One NPC in a positions window: id, x, y, z, yaw, pitch, dim.
PositionRow = tuple[str, float, float, float, float, float, str]
# What the holder of a bot answers to a `Command`.
Delivery = Literal["ok", "not_connected", "not_reading"]
EVERYONE = "*"  # `Sync.to`: every replica

_pack = msgpack.Packer(use_bin_type=True).pack
_ENVELOPE_HEADER = b"\x92"  # msgpack: an array of two


class BadMessage(ValueError):
    """A payload that is not a message this replica understands."""


# -- the messages -------------------------------------------------------------------------
# `kind` names each on the wire; the fields travel in declaration order.


@dataclass(frozen=True, slots=True)
class PositionsWindow:
    """A replica's coalesced positions in one region (its region channel), once per tick."""

    kind: ClassVar[str] = "pos"
    ts: int  # epoch ms of the cut
    rows: Sequence[PositionRow]


@dataclass(frozen=True, slots=True)
class WorldSections:
    """World sections that changed on the sender this tick (WORLD)."""

    kind: ClassVar[str] = "world"
    rows: Sequence[SectionRow]


@dataclass(frozen=True, slots=True)
class Alive:
    """Heartbeat (EVENTS): the sender is alive even when it has nothing else to say."""

    kind: ClassVar[str] = "alive"


@dataclass(frozen=True, slots=True)
class Sync:
    """Asks replica `to` (or EVERYONE) for its full list of bots: messages were lost (EVENTS)."""

    kind: ClassVar[str] = "sync"
    to: str


@dataclass(frozen=True, slots=True)
class Online:
    """The sender holds exactly these bots (EVENTS)."""

    kind: ClassVar[str] = "online"
    npcs: Sequence[str]


@dataclass(frozen=True, slots=True)
class Joined:
    """The sender took a bot (EVENTS)."""

    kind: ClassVar[str] = "joined"
    npc: str


@dataclass(frozen=True, slots=True)
class Left:
    """The sender's bot went away (EVENTS). `ts`: the cut of the sender's last window with
    the NPC (0: none); its windows cut no later are older than the leave, should they arrive
    after it (gateway/core/late_windows.py)."""

    kind: ClassVar[str] = "left"
    npc: str
    ts: int


@dataclass(frozen=True, slots=True)
class Status:
    """An NPC's new status (EVENTS)."""

    kind: ClassVar[str] = "status"
    npc: str
    status: str


@dataclass(frozen=True, slots=True)
class Deleted:
    """An NPC was deleted: every replica forgets it, its holder closes it (EVENTS)."""

    kind: ClassVar[str] = "deleted"
    npc: str


@dataclass(frozen=True, slots=True)
class Kick:
    """A newer connection for the NPC arrived on the sender: close yours (command channel)."""

    kind: ClassVar[str] = "kick"
    npc: str


@dataclass(frozen=True, slots=True)
class Drain:
    """Commands were queued for a bot you hold: hand them over (command channel)."""

    kind: ClassVar[str] = "drain"
    npc: str


@dataclass(frozen=True, slots=True)
class Command:
    """Deliver this `command` frame to your bot (command channel); answer `CommandOutcome`."""

    kind: ClassVar[str] = "cmd"
    npc: str
    frame: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What became of a `Command` (the asking replica's command channel)."""

    kind: ClassVar[str] = "cmd_ok"
    command_id: str
    outcome: Delivery


Event = Alive | Sync | Online | Joined | Left | Status | Deleted
Message = PositionsWindow | WorldSections | Event | Kick | Drain | Command | CommandOutcome

KINDS: tuple[type[Message], ...] = (
    PositionsWindow,
    WorldSections,
    Alive,
    Sync,
    Online,
    Joined,
    Left,
    Status,
    Deleted,
    Kick,
    Drain,
    Command,
    CommandOutcome,
)
_BY_KIND: dict[str, type[Message]] = {cls.kind: cls for cls in KINDS}
_FIELDS: dict[type[Message], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in KINDS
}


# -- the codec ----------------------------------------------------------------------------


def encode(sender: str, message: Message) -> bytes:
    """The payload to publish: `message` in `sender`'s envelope."""
    values = [getattr(message, name) for name in _FIELDS[type(message)]]
    return _pack((sender, (message.kind, *values)))


def decode(payload: bytes) -> tuple[str, Message]:
    """(sender, message); `BadMessage` for anything else. Checks the envelope, the kind and the
    number of fields, not every value: handlers of what they read stay defensive. Arrays decode
    as tuples (quicker on the hot path; msgpack and JSON write them back as arrays)."""
    try:
        envelope = msgpack.unpackb(payload, raw=False, use_list=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BadMessage(f"not msgpack: {exc}") from None
    match envelope:
        case (str(sender), (str(kind), *values)):
            pass
        case _:
            raise BadMessage("not a [sender, [kind, ...]] envelope")
    cls = _BY_KIND.get(kind)
    if cls is None:
        raise BadMessage(f"unknown kind {kind!r}")
    if len(values) != len(_FIELDS[cls]):
        raise BadMessage(f"{kind!r} with {len(values)} fields, not {len(_FIELDS[cls])}")
    return sender, cls(*values)


def sender_prefix(replica: str) -> bytes:
    """The first bytes of every payload `replica` sends: a backend that hears its own messages
    drops those starting so (exact: msgpack strings carry their length up front)."""
    return _ENVELOPE_HEADER + _pack(replica)
