"""Operator commands to bots, routed to whichever replica holds the bot.

REST on any replica → presence says who holds the bot → that replica's command channel →
its session hands the command to the socket → a `delivered` reply on the asking replica's
command channel. The asking replica answers 202 once delivered. When nobody holds the bot, or
the holder does not confirm within the deadline (§10), the command is queued for up to 60 s
and handed over, once, by whichever replica the bot connects to next. Deliveries, queued
commands and the bots' acks are recorded in the cache (warm tier) so `GET /api/commands/{id}`
works on every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from gateway import protocol
from gateway.bus import Bus
from gateway.bus.base import command_channel
from gateway.bus.messages import Command, CommandOutcome, Delivery, Drain, Message, encode
from gateway.cache import WARM_TTL_S, Cache
from gateway.core.hub import Hub
from gateway.pending import QUEUE_TTL_S, PendingCommands
from gateway.presence import Presence

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT_S = 2.0


class NotConnected(Exception):
    """No replica holds a bot for this NPC."""


class UnknownNpc(Exception):
    """No NPC of this id is registered: nothing to queue a command for."""


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
    def __init__(
        self,
        replica: str,
        hub: Hub,
        bus: Bus,
        presence: Presence,
        cache: Cache,
        pending: PendingCommands,
        known: Callable[[str], Awaitable[bool]],
        queue_ttl_s: float = QUEUE_TTL_S,
    ) -> None:
        self.replica = replica
        self.hub = hub
        self.bus = bus
        self.presence = presence
        self.cache = cache
        self.pending = pending
        self._known = known  # whether an NPC id is registered
        self.queue_ttl_s = queue_ttl_s
        self._waiting: dict[str, asyncio.Future[Delivery]] = {}
        self.sent = 0
        self.delivered = 0
        self.acks = 0
        self.queued = 0
        self.delivered_queued = 0

    async def send(self, npc_id: str, action: str, args: dict[str, Any]) -> tuple[str, bool]:
        """Deliver a command, or queue it when its bot is offline: (its id, delivered)."""
        command_id = uuid.uuid4().hex
        message = protocol.command(command_id, action, args)
        holder = await self.presence.holder(npc_id)
        if holder is not None:
            try:
                await self._deliver_via(holder, npc_id, message)
            except (NotConnected, NotConfirmed):
                # It left in the meantime, or its replica does not answer (it may have died
                # and its presence not yet expired): queue it; the bot takes it on reconnect,
                # and a bot that got it after all sees the id again at most once more.
                pass
            else:
                self.sent += 1
                await self._record(command_id, npc_id, action, status="delivered")
                return command_id, True
        if not await self._known(npc_id):
            raise UnknownNpc(npc_id)
        await self._enqueue(npc_id, message)
        self.sent += 1
        return command_id, False

    async def _enqueue(self, npc_id: str, message: dict[str, Any]) -> None:
        expires_ms = int((time.time() + self.queue_ttl_s) * 1000)
        # The record first: a replica taking the queue at once then overwrites it with
        # `delivered`, never the other way round.
        await self._record(message["id"], npc_id, message["action"], "queued", expires_ms)
        try:
            await self.pending.push(npc_id, message, expires_ms)
        except Exception:
            with contextlib.suppress(Exception):  # the caller is told; no record of it stays
                await self.cache.delete(_record_key(message["id"]))
            raise
        self.queued += 1
        # The bot may have connected between our presence look-up and the push, and found
        # the queue empty: its replica takes the queue again.
        holder = await self.presence.holder(npc_id)
        if holder == self.replica:
            await self.drain(npc_id)
        elif holder is not None:
            self._tell(holder, Drain(npc=npc_id))

    async def drain(self, npc_id: str) -> None:
        """Hand the NPC's queued commands to its bot on this replica (on connect, or nudged)."""
        if npc_id not in self.hub.bots:
            return
        taken = await self.pending.take(npc_id, int(time.time() * 1000))
        for expires_ms, message in taken:
            bot = self.hub.bots.get(npc_id)
            if bot is None or not bot.send_command(message):
                # Gone again, or not reading: back in the queue, never lost.
                await self.pending.push(npc_id, message, expires_ms)
                continue
            self.delivered += 1
            self.delivered_queued += 1
            await self._record(message["id"], npc_id, message["action"], "delivered")

    async def _deliver_via(self, holder: str, npc_id: str, message: dict[str, Any]) -> None:
        """Hand the command to the holding replica's bot; raise if it is not delivered."""
        command_id = message["id"]
        if holder == self.replica:
            self._deliver_or_raise(npc_id, message)
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting[command_id] = waiter
            self._tell(holder, Command(npc=npc_id, frame=message))
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

    def _deliver_locally(self, npc_id: str, message: dict[str, Any]) -> Delivery:
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

    def on_bus(self, sender: str, message: Command | CommandOutcome) -> None:
        """Another replica's command for our bot, or the outcome of one we sent."""
        match message:
            case Command(npc, frame):
                outcome = self._deliver_locally(npc, frame)
                self._tell(sender, CommandOutcome(command_id=frame["id"], outcome=outcome))
            case CommandOutcome(command_id, outcome):
                waiter = self._waiting.get(command_id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(outcome)

    def _tell(self, replica: str, message: Message) -> None:
        """To `replica`'s command channel."""
        self.bus.publish(command_channel(replica), encode(self.replica, message))

    async def on_drain(self, npc_id: str) -> None:
        """Another replica queued a command for a bot this replica holds."""
        try:
            await self.drain(npc_id)
        except Exception as exc:  # the bot takes the queue again on its next connect
            log.warning("could not deliver queued commands to %s: %s", npc_id, exc)

    async def recipient(self, command_id: str) -> str | None:
        """The NPC a command was sent to, from its delivery record (None if unknown)."""
        try:
            raw = await self.cache.get(_record_key(command_id))
        except Exception:
            return None
        return orjson.loads(raw).get("npc") if raw else None

    async def acked(self, npc_id: str, command_id: str | int) -> None:
        """Record a bot's ack; a repeated ack (a bot retrying) changes nothing."""
        ack = {"npc": npc_id, "acked_at": int(time.time() * 1000)}
        try:
            if await self.cache.get(_ack_key(str(command_id))) is not None:
                return
            self.acks += 1
            await self.cache.set(_ack_key(str(command_id)), orjson.dumps(ack), WARM_TTL_S)
        except Exception:
            return  # the record is informational; the bot has the command

    async def _record(
        self,
        command_id: str,
        npc_id: str,
        action: str | None,
        status: str,
        expires_ms: int | None = None,
    ) -> None:
        record: dict[str, Any] = {
            "id": command_id,
            "npc": npc_id,
            "action": action,
            "status": status,
            f"{status}_at": int(time.time() * 1000),
        }
        if expires_ms is not None:
            record["expires_at"] = expires_ms
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
        if record is not None and record.get("status") == "queued":
            if record.get("expires_at", 0) <= time.time() * 1000:
                record["status"] = "expired"  # nobody took it in time: it never will be
        if ack is not None and (record is None or record.get("npc") == ack.get("npc")):
            # A bot may only ack its own commands: an ack from another NPC is ignored.
            record = record or {"id": command_id, "npc": ack.get("npc")}
            record["status"] = "acked"
            record["acked_at"] = ack.get("acked_at")
        return record

    def stats(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "delivered": self.delivered,
            "acked": self.acks,
            "queued": self.queued,
            "deliveredQueued": self.delivered_queued,
        }
