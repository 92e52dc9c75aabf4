"""Operator commands to bots, routed to whichever replica holds the bot.

REST on any replica → presence says who holds the bot → that replica's command channel →
its session hands the command to the socket → a `delivered` reply on the asking replica's
command channel. The asking replica answers 202 once delivered, 409 when nobody holds the
bot, 504 when the holder does not confirm within the deadline. Deliveries and the bots' acks
are recorded in the cache (warm tier) so `GET /api/commands/{id}` works on every replica.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import msgpack
import orjson

from gateway.bus import Bus
from gateway.bus.base import command_channel
from gateway.cache import WARM_TTL_S, Cache
from gateway.hub import Hub
from gateway.presence import Presence

CONFIRM_TIMEOUT_S = 2.0
_pack = msgpack.Packer(use_bin_type=True).pack


class NotConnected(Exception):
    """No replica holds a bot for this NPC."""


class NotReading(Exception):
    """The bot is connected but its outbox is full: it is not reading its messages."""


class NotConfirmed(Exception):
    """The holding replica did not confirm delivery in time."""


def _record_key(command_id: str) -> str:
    return f"cmd:{command_id}"


def _ack_key(command_id: str) -> str:
    # Its own key: the asking replica writes the delivery record while the holding replica
    # writes the ack, often at the same moment; one shared read-modify-write record would let
    # the later writer erase the other's update.
    return f"cmd:{command_id}:ack"


class CommandRouter:
    def __init__(self, replica: str, hub: Hub, bus: Bus, presence: Presence, cache: Cache) -> None:
        self.replica = replica
        self.hub = hub
        self.bus = bus
        self.presence = presence
        self.cache = cache
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self.sent = 0
        self.delivered = 0
        self.acks = 0

    async def send(self, npc_id: str, action: str, args: dict[str, Any]) -> str:
        """Deliver a command; its id once a bot session has it."""
        command_id = uuid.uuid4().hex
        message = {"type": "command", "id": command_id, "action": action, "args": args}
        holder = await self.presence.holder(npc_id)
        if holder is None:
            raise NotConnected(npc_id)
        self.sent += 1
        if holder == self.replica:
            self._deliver_or_raise(npc_id, message)
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting[command_id] = waiter
            self.bus.publish(
                command_channel(holder),
                _pack({"r": self.replica, "k": "cmd", "npc": npc_id, "msg": message}),
            )
            try:
                async with asyncio.timeout(CONFIRM_TIMEOUT_S):
                    delivered = await waiter
            except TimeoutError:
                raise NotConfirmed(npc_id) from None
            finally:
                self._waiting.pop(command_id, None)
            if delivered == "not_reading":
                raise NotReading(npc_id)
            if delivered != "ok":
                raise NotConnected(npc_id)
        await self._record(command_id, npc_id, action, status="delivered")
        return command_id

    def _deliver_locally(self, npc_id: str, message: dict[str, Any]) -> str:
        """ "ok", "not_connected" or "not_reading"."""
        bot = self.hub.bots.get(npc_id)
        if bot is None:
            return "not_connected"
        if not bot.send_command(message):
            return "not_reading"
        self.delivered += 1
        return "ok"

    def _deliver_or_raise(self, npc_id: str, message: dict[str, Any]) -> None:
        outcome = self._deliver_locally(npc_id, message)
        if outcome == "not_reading":
            raise NotReading(npc_id)
        if outcome != "ok":
            raise NotConnected(npc_id)

    def on_bus(self, msg: dict[str, Any]) -> None:
        """A message on this replica's command channel."""
        kind = msg.get("k")
        if kind == "cmd":
            outcome = self._deliver_locally(msg["npc"], msg["msg"])
            reply = {"r": self.replica, "k": "cmd_ok", "id": msg["msg"]["id"], "ok": outcome}
            self.bus.publish(command_channel(msg["r"]), _pack(reply))
        elif kind == "cmd_ok":
            waiter = self._waiting.get(msg["id"])
            if waiter is not None and not waiter.done():
                waiter.set_result(str(msg["ok"]))

    async def recipient(self, command_id: str) -> str | None:
        """The NPC a command was sent to, from its delivery record (None if unknown)."""
        try:
            raw = await self.cache.get(_record_key(command_id))
        except Exception:
            return None
        return orjson.loads(raw).get("npc") if raw else None

    async def acked(self, npc_id: str, command_id: str | int) -> None:
        self.acks += 1
        ack = {"npc": npc_id, "acked_at": int(time.time() * 1000)}
        try:
            await self.cache.set(_ack_key(str(command_id)), orjson.dumps(ack), WARM_TTL_S)
        except Exception:
            return  # the record is informational; the bot has the command

    async def _record(self, command_id: str, npc_id: str, action: str | None, status: str) -> None:
        record = {
            "id": command_id,
            "npc": npc_id,
            "action": action,
            "status": status,
            f"{status}_at": int(time.time() * 1000),
        }
        try:
            await self.cache.set(_record_key(command_id), orjson.dumps(record), WARM_TTL_S)
        except Exception:
            return  # the record is informational; delivery already happened

    async def lookup(self, command_id: str) -> dict[str, Any] | None:
        """The delivery record merged with the bot's ack (an ack may overtake the record)."""
        try:
            raw = await self.cache.get(_record_key(command_id))
            raw_ack = await self.cache.get(_ack_key(command_id))
        except Exception:
            return None
        record = orjson.loads(raw) if raw else None
        ack = orjson.loads(raw_ack) if raw_ack else None
        if ack is not None and (record is None or record.get("npc") == ack.get("npc")):
            # A bot may only ack its own commands: an ack from another NPC is ignored.
            record = record or {"id": command_id, "npc": ack.get("npc")}
            record["status"] = "acked"
            record["acked_at"] = ack.get("acked_at")
        return record

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "delivered": self.delivered, "acked": self.acks}
