"""Redis pub/sub bus: one publishing connection, one subscribing connection, per replica.

Guarantees (see base.py): `publish` is synchronous and never touches the network; a sender
task drains a bounded queue, pipelining whatever piled up into one round trip, in order.
While Redis is unreachable, or the queue is full, messages are dropped and counted. Redis
echoes a replica's messages back to it: they are dropped by their envelope's first bytes
(`gateway.bus.messages.sender_prefix`), undecoded. Both
connections reconnect by themselves (exponential backoff with jitter, capped) and the
subscriber re-subscribes; delivery is at most once. Region channels (`set_positions`) change
on the live subscription from a task of their own, and a reconnect subscribes to the latest set.
On a Redis Cluster, gateway/bus/cluster.py changes how it connects, publishes and subscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from gateway.backoff import Backoff
from gateway.bus.base import EVENTS, POSITIONS_PATTERN, WORLD, BusHandler, command_channel
from gateway.bus.messages import sender_prefix
from gateway.redis_pool import AnyRedis, fail_fast_client

log = logging.getLogger(__name__)

OnControl = Callable[[str, bytes | None], None]  # (kind, channel) of a non-message

# What a subscription hears back, for plain, pattern and sharded (cluster) pub/sub alike.
_CONFIRMATIONS = ("subscribe", "psubscribe", "ssubscribe")
_MESSAGES = ("message", "pmessage", "smessage")


class RedisBus:
    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        max_queue: int = 10_000,
        max_batch: int = 500,
        connect_timeout_s: float = 1.0,
        socket_timeout_s: float = 2.0,
        ping_interval_s: float = 5.0,
    ) -> None:
        self._url = url
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._connect_timeout_s = connect_timeout_s
        self._socket_timeout_s = socket_timeout_s
        self._ping_interval_s = ping_interval_s
        self._replica = ""
        self._own = b""  # how this replica's payloads start: its echoes
        self._handler: BusHandler | None = None
        self._queue: deque[tuple[str, bytes]] = deque()
        self._wakeup = asyncio.Event()
        self._pub: AnyRedis | None = None
        self._sub: AnyRedis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pub_up = False
        self._sub_up = False
        self._closed = False
        # Region channels wanted (None: every region, by pattern) and what the live
        # subscription has asked Redis for.
        self._wanted: set[str] | None = set()
        self._heard: set[str] = set()
        self._heard_all = False
        self._pubsub: PubSub | None = None
        self._regions_changed = asyncio.Event()
        self.published = 0
        self.published_bytes = 0
        self.received_bytes = 0
        self.received = 0
        self.dropped = 0
        self.reconnects = 0

    async def start(self, replica: str, handler: BusHandler) -> None:
        """Connect and subscribe. Waits for the first attempt of each connection only: a
        replica whose Redis is down still starts, and the bus connects when Redis appears."""
        self._replica = replica
        self._own = sender_prefix(replica)
        self._handler = handler
        pub_tried, sub_tried = asyncio.Event(), asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._send_loop(pub_tried), name=f"bus-send-{replica}"),
            asyncio.create_task(self._listen_loop(sub_tried), name=f"bus-listen-{replica}"),
            asyncio.create_task(self._regions_loop(), name=f"bus-regions-{replica}"),
        ]
        await pub_tried.wait()
        await sub_tried.wait()

    async def close(self) -> None:
        self._closed = True
        self._handler = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for client in (self._pub, self._sub):
            if client is not None:
                await client.aclose()
        self._pub = self._sub = None
        self._pub_up = self._sub_up = False

    def _client(self) -> AnyRedis:
        return fail_fast_client(self._url, self._connect_timeout_s, self._socket_timeout_s)

    def publish(self, channel: str, payload: bytes) -> None:
        if not self._pub_up or len(self._queue) >= self._max_queue:
            self.dropped += 1
            return
        self._queue.append((channel, payload))
        self._wakeup.set()

    def alone(self) -> bool:
        return False  # replicas may be listening on Redis whenever

    def set_positions(self, channels: set[str] | None) -> None:
        self._wanted = None if channels is None else set(channels)
        self._regions_changed.set()

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "published": self.published,
            "received": self.received,
            "dropped": self.dropped,
            "connected": self._pub_up and self._sub_up,
            "queued": len(self._queue),
            "reconnects": self.reconnects,
            "published_bytes": self.published_bytes,
            "received_bytes": self.received_bytes,
        }

    # -- sending -------------------------------------------------------------------------

    async def _send_loop(self, tried: asyncio.Event) -> None:
        backoff = Backoff()
        while not self._closed:
            if not self._pub_up:
                try:
                    await self._connect_publisher()
                except Exception as exc:  # whatever it is, retry later: never die silently
                    tried.set()
                    if backoff.first:
                        log.warning(
                            "bus: publisher cannot reach Redis: %s: %s", type(exc).__name__, exc
                        )
                    await backoff.wait()
                    continue
                if backoff.succeeded():
                    self.reconnects += 1
                    log.info("bus: publisher reconnected")
                self._pub_up = True
                tried.set()
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue and self._pub_up:
                batch = [
                    self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))
                ]
                try:
                    sent = await self._send(batch)
                except (RedisError, OSError) as exc:
                    # At most once: what was in flight is dropped too.
                    self.dropped += len(batch)
                    self._publisher_down()
                    log.warning("bus: publish failed, dropping until Redis is back: %s", exc)
                    break
                except Exception:
                    self.dropped += len(batch)
                    log.exception("bus: could not send a batch of %d", len(batch))
                    continue
                self.published += sent

    async def _connect_publisher(self) -> None:
        """Make sure the publishing connection reaches Redis (raises if it does not)."""
        if self._pub is None:
            self._pub = self._client()
        await self._pub.ping()

    def _publisher_down(self) -> None:
        """Drop what is queued and make `publish` drop until the sender has pinged Redis."""
        self._pub_up = False
        self.dropped += len(self._queue)
        self._queue.clear()
        self._wakeup.set()

    async def _send(self, batch: list[tuple[str, bytes]]) -> int:
        """Send `batch`; how many of it went out (the others were dropped and counted)."""
        assert self._pub is not None
        if len(batch) == 1:
            await self._pub.publish(*batch[0])
        else:
            async with self._pub.pipeline(transaction=False) as pipe:
                for channel, payload in batch:
                    pipe.publish(channel, payload)
                await pipe.execute()
        self.published_bytes += sum(len(payload) for _, payload in batch)
        return len(batch)

    # -- receiving -----------------------------------------------------------------------

    async def _listen_loop(self, tried: asyncio.Event) -> None:
        backoff = Backoff()
        while not self._closed:
            pubsub: PubSub | None = None
            try:
                pubsub = await self._new_pubsub()
                wanted = await self._regions_to_hear()
                regions = set() if wanted is None else wanted
                channels = [EVENTS, WORLD, command_channel(self._replica), *sorted(regions)]
                await self._subscribe(pubsub, channels, pattern=wanted is None)
                self._heard, self._heard_all = regions, wanted is None
                self._pubsub = pubsub
                self._regions_changed.set()  # whatever changed while we were subscribing
                if backoff.succeeded():
                    self.reconnects += 1
                    log.info("bus: subscriber reconnected")
                self._sub_up = True
                tried.set()
                await self._receive(pubsub)
            except Exception as exc:  # Redis errors, and anything else: never die silently
                if self._sub_up or backoff.first:
                    log.warning("bus: subscriber lost Redis: %s: %s", type(exc).__name__, exc)
                if self._sub_up and self._pub_up:
                    # The publishing connection is most likely dead too; it would only find
                    # out by losing the next message, so make it reconnect now.
                    self._publisher_down()
                self._sub_up = False
                tried.set()
                await backoff.wait()
            finally:
                self._sub_up = False
                self._pubsub = None
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()

    async def _new_pubsub(self) -> PubSub:
        """A pub/sub object for a fresh subscription (it connects on its first command)."""
        if self._sub is None:
            self._sub = self._client()
        return self._sub.pubsub()

    async def _regions_to_hear(self) -> set[str] | None:
        """The region channels to subscribe to now; None: every region, by pattern."""
        wanted = self._wanted
        return None if wanted is None else set(wanted)

    async def _subscribe_to(self, pubsub: PubSub, channels: list[str]) -> None:
        await pubsub.subscribe(*channels)

    async def _unsubscribe_from(self, pubsub: PubSub, channels: list[str]) -> None:
        await pubsub.unsubscribe(*channels)

    def _confirmation_of(self, channel: str) -> bytes:
        """The channel name a confirmation of `channel` carries."""
        return channel.encode()

    def _channel_of(self, heard: bytes) -> str:
        """The bus channel of a channel name heard from Redis."""
        return heard.decode()

    async def _subscribe(
        self,
        pubsub: PubSub,
        channels: list[str],
        *,
        pattern: bool,
        on_control: OnControl | None = None,
    ) -> None:
        on_control = on_control or self._on_control
        await self._subscribe_to(pubsub, channels)
        pending = {self._confirmation_of(c) for c in channels}
        if pattern:
            await pubsub.psubscribe(POSITIONS_PATTERN)
            pending.add(POSITIONS_PATTERN.encode())
        # Wait for every confirmation, so a started bus really hears what is published next.
        while pending:
            msg = await pubsub.get_message(timeout=self._socket_timeout_s)
            if msg is None:
                raise RedisError("no subscription confirmation from Redis")
            if msg["type"] in _MESSAGES:
                self._deliver(msg["channel"], msg["data"])
                continue
            on_control(msg["type"], msg["channel"])
            if msg["type"] in _CONFIRMATIONS:
                pending.discard(msg["channel"])

    async def _regions_loop(self) -> None:
        """Bring the live subscription to the wanted region channels: new ones first, then
        drop the old, so a viewer moving across a border misses nothing in between."""
        while not self._closed:
            poll_s = self._regions_poll_s()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._regions_changed.wait(), poll_s)
            self._regions_changed.clear()
            pubsub = self._pubsub
            if pubsub is None or not self._sub_up:
                continue  # the next connection subscribes to the wanted set
            try:
                wanted = await self._regions_to_hear()
                regions = set() if wanted is None else wanted
                if wanted is None and not self._heard_all:
                    await pubsub.psubscribe(POSITIONS_PATTERN)
                    self._heard_all = True
                if add := regions - self._heard:
                    await self._subscribe_to(pubsub, sorted(add))
                if drop := self._heard - regions:
                    await self._unsubscribe_from(pubsub, sorted(drop))
                self._heard = regions
                if wanted is not None and self._heard_all:
                    await pubsub.punsubscribe(POSITIONS_PATTERN)
                    self._heard_all = False
            except Exception as exc:
                # The listener finds the dead link too and resubscribes to the wanted set.
                log.warning("bus: could not change region subscriptions: %s", exc)

    def _regions_poll_s(self) -> float | None:
        """How often to look at the regions again without being told (None: only when told)."""
        return None

    async def _receive(self, pubsub: PubSub, on_control: OnControl | None = None) -> None:
        on_control = on_control or self._on_control
        loop = asyncio.get_running_loop()
        last_rx = loop.time()
        while not self._closed:
            msg = await pubsub.get_message(timeout=self._ping_interval_s)
            now = loop.time()
            if msg is None:
                # Idle: a PING proves the link is alive (a hung server or a half-open socket
                # would otherwise keep us "subscribed" forever).
                if now - last_rx > 2 * self._ping_interval_s:
                    raise RedisError("subscriber connection silent, reconnecting")
                await pubsub.ping()
                continue
            last_rx = now
            if msg["type"] in _MESSAGES:
                self._deliver(msg["channel"], msg["data"])
            else:
                on_control(msg["type"], msg["channel"])

    def _on_control(self, kind: str, channel: bytes | None) -> None:
        """A (un)subscription confirmation or a PONG, in the order Redis sent it."""

    def _deliver(self, channel: bytes, payload: bytes) -> None:
        self.received_bytes += len(payload)  # what came over the wire, own echoes included
        if payload.startswith(self._own) or self._handler is None:
            return
        self.received += 1
        try:
            self._handler(self._channel_of(channel), payload)
        except Exception:
            # One bad message must not kill the subscription.
            log.exception("bus: handler failed on %r", channel)
