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


class NotConfirmed(Exception):
    """The holding replica did not confirm delivery in time."""


def _record_key(command_id: str) -> str:
    return f"cmd:{command_id}"


class CommandRouter:
    def __init__(self, replica: str, hub: Hub, bus: Bus, presence: Presence, cache: Cache) -> None:
        self.replica = replica
        self.hub = hub
        self.bus = bus
        self.presence = presence
        self.cache = cache
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self.sent = 0
        self.delivered = 0
        self.acked = 0

    async def send(self, npc_id: str, action: str, args: dict[str, Any]) -> str:
        """Deliver a command; its id once a bot session has it."""
        command_id = uuid.uuid4().hex
        message = {"type": "command", "id": command_id, "action": action, "args": args}
        holder = await self.presence.holder(npc_id)
        if holder is None:
            raise NotConnected(npc_id)
        self.sent += 1
        if holder == self.replica:
            if not self._deliver_locally(npc_id, message):
                raise NotConnected(npc_id)
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
            if not delivered:
                raise NotConnected(npc_id)
        await self._record(command_id, npc_id, action, status="delivered")
        return command_id

    def _deliver_locally(self, npc_id: str, message: dict[str, Any]) -> bool:
        bot = self.hub.bots.get(npc_id)
        if bot is None or not bot.send_message(message):
            return False
        self.delivered += 1
        return True

    def on_bus(self, msg: dict[str, Any]) -> None:
        """A message on this replica's command channel."""
        kind = msg.get("k")
        if kind == "cmd":
            ok = self._deliver_locally(msg["npc"], msg["msg"])
            reply = {"r": self.replica, "k": "cmd_ok", "id": msg["msg"]["id"], "ok": ok}
            self.bus.publish(command_channel(msg["r"]), _pack(reply))
        elif kind == "cmd_ok":
            waiter = self._waiting.get(msg["id"])
            if waiter is not None and not waiter.done():
                waiter.set_result(bool(msg["ok"]))

    async def acked(self, npc_id: str, command_id: str | int) -> None:
        self.acked += 1
        await self._record(str(command_id), npc_id, None, status="acked")

    async def _record(self, command_id: str, npc_id: str, action: str | None, status: str) -> None:
        key = _record_key(command_id)
        try:
            raw = await self.cache.get(key)
            record = orjson.loads(raw) if raw else {"id": command_id, "npc": npc_id}
            if record.get("npc") != npc_id:
                return  # a bot may only ack its own commands
            if action is not None:
                record["action"] = action
            if not (status == "delivered" and record.get("status") == "acked"):
                record["status"] = status  # an ack may overtake the delivery record
            record[f"{status}_at"] = int(time.time() * 1000)
            await self.cache.set(key, orjson.dumps(record), WARM_TTL_S)
        except Exception:
            return  # the record is informational; delivery already happened

    async def lookup(self, command_id: str) -> dict[str, Any] | None:
        try:
            raw = await self.cache.get(_record_key(command_id))
        except Exception:
            return None
        return orjson.loads(raw) if raw else None

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "delivered": self.delivered, "acked": self.acked}
