"""The Redis bus on a Redis Cluster: sharded pub/sub, region channels spread over the masters.

SPUBLISH delivers a message within the shard that owns its channel's slot, where PUBLISH on a
cluster is broadcast to every node. Each region channel is its own hash tag
(`{aicraft:pos:overworld:0:0}`), so regions hash to slots all over the cluster and the
position fan-out, the bulk of the bus, is spread over every master. The other bus channels
(events, commands, world, NEW_REGIONS) and the registry of regions in use stay under the tag
`{aicraft:bus}`: one slot, one master (the bus's master), in the order they were published.

Across slots there is no order: a bot's `left` on the events channel may overtake its last
window on a region channel; `Left` says which of the sender's windows it follows and the node
drops those that arrive after it (gateway/core/late_windows.py).

Publishing: a batch is split by the master owning each channel's slot, one pipeline per master,
all sent at once (a batch takes the slowest master's round trip, not the sum), each after that
master's previous part. A batch waits SLOW_S at most: a master still busy with an earlier part
(hung, say, until the socket timeout) loses its part of this one, so it never holds up the
others' regions. A master that fails loses its part (dropped, counted) and is retried after a
backoff while the others keep carrying their regions; the slot map is reloaded in the
background after a failure.

Subscribing: one plain pub/sub connection per master owning a wanted channel (the bus's master
always), each read by a task of its own. A connection error, MOVED, or a `sunsubscribe` the
server pushes for a channel still wanted (its slot moved) reconnects that master's connection
with backoff and reloads the slot map; the others keep flowing. redis-py's asyncio cluster
pub/sub is not used: it reads its per-node connections in turn, each with the full timeout, so
a message waits out the others' silence.

Sharded pub/sub has no pattern subscription. A replica that must hear every region subscribes
to the regions in use instead, which publishers note in a sorted set (REGIONS_KEY, read every
POLL_S), and to NEW_REGIONS, where publishers copy the first windows of a region they start
publishing to (gateway/bus/region_runs.py). The copy and its original travel on different
masters: the receiver delivers whichever comes first and drops its twin (gateway/bus/copies.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError, SlotNotCoveredError

from gateway.backoff import Backoff, backoff_delay
from gateway.bus.base import EVENTS, WORLD, command_channel
from gateway.bus.copies import Copies
from gateway.bus.redis import RedisBus
from gateway.bus.region_runs import IN_USE_S, RegionRuns
from gateway.redis_pool import AnyRedis, fail_fast_client
from gateway.redis_url import is_cluster_url, node_url
from gateway.regions import POSITIONS_PREFIX, is_positions_channel

log = logging.getLogger(__name__)

TAG = "{aicraft:bus}"
REGIONS_KEY = TAG + ":regions"  # region channel -> when a publisher last noted it (ms)
NEW_REGIONS = "aicraft:pos-new"  # copies of new regions' windows (not a region channel)
POLL_S = 1.0  # how often a replica hearing every region reads the regions in use
SLOW_S = 0.25  # a master's part of a batch not sent by then no longer holds the batch up


def redis_bus(url: str) -> RedisBus:
    """The Redis bus for `url`: on a cluster (`redis+cluster://`), a ClusterBus."""
    return ClusterBus(url) if is_cluster_url(url) else RedisBus(url)


def wire_name(channel: str) -> str:
    """The name a bus channel has on the cluster: a region channel is its own hash tag (its
    own slot); the others are under the bus's tag (one slot)."""
    if is_positions_channel(channel):
        return "{" + channel + "}"
    return TAG + channel


def bus_channel(wire: str) -> str:
    """The bus channel of a name heard on the cluster (`wire_name` undone)."""
    return wire[len(TAG) :] if wire.startswith(TAG) else wire[1:-1]


def wrap_copy(channel: str, payload: bytes) -> bytes:
    """A window for NEW_REGIONS: its region channel, length first, then the payload."""
    name = channel.encode()
    return len(name).to_bytes(2, "big") + name + payload


def unwrap_copy(copy: bytes) -> tuple[str, bytes]:
    size = int.from_bytes(copy[:2], "big")
    return copy[2 : 2 + size].decode(), copy[2 + size :]


_NEW_REGIONS_WIRE = wire_name(NEW_REGIONS)
_Message = tuple[str, bytes, bool]  # (wire channel, payload, one of the batch: not a copy)
_NEW_REGIONS_BYTES = _NEW_REGIONS_WIRE.encode()
_REGION_WIRE_START = ("{" + POSITIONS_PREFIX).encode()


@dataclass(slots=True)
class _Target:
    """A master the publisher sends to: its client, or (down) when to try it again."""

    client: Redis | None = None
    backoff: Backoff = field(default_factory=Backoff)
    retry_at: float = 0.0
    sending: asyncio.Task[bool] | None = None  # its part of a batch, in flight


@dataclass(eq=False, slots=True)
class _Listener:
    """The subscription on one master: the bus channels wanted there, those it has."""

    name: str  # host:port
    url: str
    channels: set[str]
    heard: set[str] = field(default_factory=set)
    dropping: set[str] = field(default_factory=set)  # unsubscribed, not yet confirmed
    pubsub: PubSub | None = None
    up: bool = False
    tried: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class ClusterBus(RedisBus):
    backend = "redis"

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._topology: AnyRedis | None = None  # its slot map tells who owns which channel
        self._slots_lock = asyncio.Lock()
        self._runs = RegionRuns()
        self._targets: dict[str, _Target] = {}  # by node name
        self._listeners: dict[str, _Listener] = {}  # by node name
        self._remap = False  # a listener failed: reload the slot map before regrouping
        self._stale = False  # a send failed: reload the slot map after the batch
        self._reload: asyncio.Task[None] | None = None  # that reload
        self._copies = Copies()

    async def close(self) -> None:
        # Wake the loops too: a cancellation can get lost inside a Redis call (one landing as
        # a timeout expires may come out as TimeoutError, taken for a Redis failure), and the
        # regrouping loop then waited for ever (seen in about 1 teardown in 8).
        self._closed = True
        self._regions_changed.set()
        self._wakeup.set()
        await super().close()  # the loops first: nothing starts a listener any more
        if self._reload is not None:
            self._reload.cancel()
            await asyncio.wait([self._reload])
        for listener in self._listeners.values():
            await self._stop(listener)
        self._listeners = {}
        for target in self._targets.values():
            if target.sending is not None:
                target.sending.cancel()
                await asyncio.wait([target.sending])
            if target.client is not None:
                await target.client.aclose()
        self._targets = {}
        if isinstance(self._topology, RedisCluster):
            # Only its slot map was ever loaded (see _load_slots): close what that opened.
            await self._topology.nodes_manager.aclose()
            await self._topology.nodes_manager.aclose("startup_nodes")
        self._topology = None

    # -- the slot map ----------------------------------------------------------------------

    async def _load_slots(self) -> None:
        """Read the slot map again (CLUSTER SLOTS from any seed that answers)."""
        async with self._slots_lock:
            if self._topology is None:
                self._topology = self._client()
            assert isinstance(self._topology, RedisCluster)
            # The slot map only: the client's own initialize() also asks one fixed master for
            # its command table, and fails while that one is down, whichever the bus needs.
            await self._topology.nodes_manager.initialize()

    def _node_of(self, wire: str) -> ClusterNode:
        """The master owning `wire`'s slot in the slot map last read (raises if uncovered)."""
        assert isinstance(self._topology, RedisCluster)
        node = self._topology.get_node_from_key(wire)
        assert node is not None
        return node

    def _bus_node(self) -> ClusterNode | None:
        """The bus's master in the slot map last read; None if nobody serves its slot."""
        try:
            return self._node_of(TAG)
        except SlotNotCoveredError:
            return None

    def _url_of(self, node: ClusterNode) -> str:
        return node_url(self._url, node.host, node.port)

    # -- publishing ------------------------------------------------------------------------

    async def _connect_publisher(self) -> None:
        self._runs.reset()
        await self._load_slots()

    async def _send(self, batch: list[tuple[str, bytes]]) -> int:
        regions = {c for c, _ in batch if is_positions_channel(c)}
        new, due = self._runs.sent(regions, time.monotonic()) if regions else (set(), set())
        bus_node = self._bus_node()
        # Per master: (wire channel, payload, whether it is one of the batch, not a copy)
        parts: dict[str, tuple[ClusterNode, list[_Message]]] = {}
        uncovered = 0
        for channel, payload in batch:
            wire = wire_name(channel)
            try:
                node = self._node_of(wire)
            except (RedisError, SlotNotCoveredError):  # nobody serves it: dropped, map reloaded
                uncovered += 1
                continue
            parts.setdefault(node.name, (node, []))[1].append((wire, payload, True))
            if channel in new and bus_node is not None:
                copy = (_NEW_REGIONS_WIRE, wrap_copy(channel, payload), False)
                parts.setdefault(bus_node.name, (bus_node, []))[1].append(copy)
        # Every master's part at once, each after its previous part: a master still busy with
        # that one (slow, hung) loses this one, and no part holds the batch up past SLOW_S.
        started: dict[asyncio.Task[bool], int] = {}  # its part's messages (copies aside)
        for name, (node, messages) in parts.items():
            count = sum(1 for _, _, original in messages if original)
            target = self._targets.get(name)
            if target is None:
                target = self._targets[name] = _Target()
            if target.sending is not None and not target.sending.done():
                self.dropped += count
                continue
            task = asyncio.create_task(self._send_to(node, target, messages))
            target.sending = task
            started[task] = count
        sent = 0
        if started:
            done, late = await asyncio.wait(started, timeout=SLOW_S)
            for task in done:
                if task.result():
                    sent += started[task]
                else:
                    self.dropped += started[task]
            for task in late:  # counted when it ends
                task.add_done_callback(functools.partial(self._settle, started[task]))
        self.dropped += uncovered
        if (uncovered or self._stale) and (self._reload is None or self._reload.done()):
            # Once per failure, not per batch dropped while a master is down; in the
            # background: a seed that hangs would hold the batches up until its timeout.
            self._stale = False
            self._reload = asyncio.create_task(self._reload_quietly())
        if due:
            await self._note(due)
        return sent

    def _settle(self, count: int, task: asyncio.Task[bool]) -> None:
        """A part that outlasted its batch's SLOW_S has ended: count it."""
        if not task.cancelled() and task.result():
            self.published += count
        else:
            self.dropped += count

    async def _send_to(self, node: ClusterNode, target: _Target, messages: list[_Message]) -> bool:
        """One master's part of a batch, in one pipeline; False when it was dropped."""
        if target.client is None:
            if time.monotonic() < target.retry_at:
                return False  # down: its regions are dropped until it is tried again
            client = fail_fast_client(
                self._url_of(node), self._connect_timeout_s, self._socket_timeout_s
            )
            assert isinstance(client, Redis)
            target.client = client
        try:
            async with target.client.pipeline(transaction=False) as pipe:
                for wire, payload, _ in messages:
                    pipe.spublish(wire, payload)
                await pipe.execute()
        except Exception as exc:  # a Redis error mostly; whatever it is, the part is lost
            if target.backoff.first:
                log.warning("bus: publishing to %s failed, dropping its part: %s", node.name, exc)
            await self._drop_target(target)
            self._stale = True  # its slots may have moved: MOVED, a failover
            target.retry_at = time.monotonic() + backoff_delay(target.backoff.attempt)
            target.backoff.attempt += 1
            return False
        self.published_bytes += sum(len(p) for _, p, original in messages if original)
        if target.backoff.succeeded():
            self.reconnects += 1
            log.info("bus: publishing to %s again", node.name)
            bus_node = self._bus_node()
            if bus_node is not None and node.name == bus_node.name:
                self._runs.reset()  # the registry may have gone with the bus's master
        return True

    async def _drop_target(self, target: _Target) -> None:
        if target.client is not None:
            with contextlib.suppress(Exception):
                await target.client.aclose()
        target.client = None

    async def _reload_quietly(self) -> None:
        try:
            await self._load_slots()
        except Exception as exc:  # the old map stays; the next failure tries again
            log.debug("bus: could not reload the slot map: %s", exc)

    async def _note(self, channels: set[str]) -> None:
        """Note `channels` as in use now, and drop the regions nobody noted for IN_USE_S.
        Best effort, apart from the windows: a cluster that lost another master still carries
        SPUBLISH but refuses ZADD (CLUSTERDOWN); a region is noted again NOTE_EVERY_S later."""
        bus_node = self._bus_node()
        target = None if bus_node is None else self._targets.get(bus_node.name)
        if target is None or target.client is None:
            return
        now_ms = int(time.time() * 1000)
        try:
            async with target.client.pipeline(transaction=False) as pipe:
                pipe.zadd(REGIONS_KEY, dict.fromkeys(channels, now_ms))
                pipe.zremrangebyscore(REGIONS_KEY, "-inf", now_ms - int(IN_USE_S * 1000))
                await pipe.execute()
        except RedisError as exc:
            log.debug("bus: could not note regions in use: %s", exc)

    # -- subscribing -----------------------------------------------------------------------

    async def _listen_loop(self, tried: asyncio.Event) -> None:
        """Keep one listener per master owning a wanted channel, each on its own connection:
        regroup whenever the wanted regions change, a listener failed, or (hearing every
        region) every POLL_S."""
        backoff = Backoff()
        first = True
        while not self._closed:
            try:
                if self._remap or self._topology is None or self._sub is None:
                    self._remap = False
                    await self._load_slots()
                    await self._bus_master_client()
                await self._regroup(await self._channels_to_hear())
                if first:
                    for listener in list(self._listeners.values()):
                        await listener.tried.wait()
                    first = False
                backoff.succeeded()
            except Exception as exc:  # no seed answers, say: try again, never die silently
                if backoff.first:
                    log.warning("bus: cannot read the cluster's slot map: %s", exc)
                self._remap = True
                tried.set()
                await backoff.wait()
                continue
            tried.set()
            poll_s = POLL_S if self._wanted is None else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._regions_changed.wait(), poll_s)
            self._regions_changed.clear()

    async def _regions_loop(self) -> None:
        """Nothing: `_listen_loop` changes the region subscriptions itself."""

    async def _bus_master_client(self) -> None:
        """A plain client on the bus's master (for the registry of regions in use)."""
        if self._sub is not None:
            await self._sub.aclose()
        client = fail_fast_client(
            self._url_of(self._node_of(TAG)), self._connect_timeout_s, self._socket_timeout_s
        )
        assert isinstance(client, Redis)
        self._sub = client

    async def _channels_to_hear(self) -> set[str]:
        """Every bus channel to hear now: the replica's own, and the wanted regions or (every
        region) those in use and NEW_REGIONS; while the registry cannot be read, the regions
        heard already."""
        channels = {EVENTS, WORLD, command_channel(self._replica)}
        wanted = self._wanted
        if wanted is not None:
            regions = set(wanted)
        else:
            assert self._sub is not None
            since_ms = int(time.time() * 1000) - int(IN_USE_S * 1000)
            try:
                in_use = await self._sub.zrangebyscore(REGIONS_KEY, since_ms, "+inf")
                regions = {c.decode() for c in in_use} | {NEW_REGIONS}
            except (RedisError, OSError) as exc:
                log.debug("bus: cannot read the regions in use: %s", exc)
                regions = self._heard | {NEW_REGIONS}
        self._heard, self._heard_all = regions, wanted is None
        return channels | regions

    async def _regroup(self, channels: set[str]) -> None:
        """Bring each master's listener to the channels it owns: new subscriptions first,
        then drops, so a channel moving between masters or regions is not missed meanwhile."""
        grouped: dict[str, tuple[ClusterNode, set[str]]] = {}
        for channel in channels:
            node = self._node_of(wire_name(channel))
            grouped.setdefault(node.name, (node, set()))[1].add(channel)
        for name, (node, owned) in grouped.items():
            listener = self._listeners.get(name)
            if listener is None:
                listener = self._listeners[name] = _Listener(name, self._url_of(node), owned)
                listener.task = asyncio.create_task(
                    self._listen_to(listener), name=f"bus-listen-{self._replica}-{name}"
                )
            else:
                listener.channels = owned
                await self._retune(listener, add=True)
        for name, listener in list(self._listeners.items()):
            if name not in grouped:
                del self._listeners[name]
                await self._stop(listener)
            else:
                await self._retune(listener, add=False)
        self._sub_up = all(listener.up for listener in self._listeners.values())

    async def _retune(self, listener: _Listener, *, add: bool) -> None:
        """Subscribe a live listener to its new channels (`add`), or drop those it no longer
        owns. A dead one subscribes to its channels when it connects again."""
        pubsub = listener.pubsub
        if pubsub is None or not listener.up:
            return
        try:
            if add and (more := listener.channels - listener.heard):
                await self._subscribe_to(pubsub, sorted(more))
                listener.heard |= more
            if not add and (fewer := listener.heard - listener.channels):
                listener.heard -= fewer
                listener.dropping |= fewer
                await self._unsubscribe_from(pubsub, sorted(fewer))
        except Exception as exc:  # its own loop finds the dead link and resubscribes
            log.warning("bus: could not change subscriptions on %s: %s", listener.name, exc)

    async def _stop(self, listener: _Listener) -> None:
        if listener.task is not None:
            listener.task.cancel()
            # Not `await task` under suppress(CancelledError): that would also swallow a
            # cancellation of the caller (the regrouping loop, closing), which then ran on.
            await asyncio.wait([listener.task])

    async def _listen_to(self, listener: _Listener) -> None:
        """One master's subscription, reconnected with backoff; the others are not waited on."""
        backoff = Backoff()

        def on_control(kind: str, channel: bytes | None) -> None:
            if kind == "sunsubscribe" and channel is not None:
                name = bus_channel(channel.decode())
                if name in listener.dropping:
                    listener.dropping.discard(name)  # ours (the channel may be wanted again)
                elif name in listener.channels:
                    # Not asked for: the cluster moved the channel's slot to another master.
                    raise RedisError(f"{channel!r} moved away from {listener.name}")

        while not self._closed:
            client = fail_fast_client(listener.url, self._connect_timeout_s, self._socket_timeout_s)
            pubsub = client.pubsub()
            try:
                channels = sorted(listener.channels)
                listener.dropping.clear()  # a fresh connection: nothing of ours in flight
                await self._subscribe(pubsub, channels, pattern=False, on_control=on_control)
                listener.heard = set(channels)
                listener.pubsub, listener.up = pubsub, True
                if backoff.succeeded():
                    self.reconnects += 1
                    log.info("bus: subscribed on %s again", listener.name)
                self._listener_changed(listener)
                await self._receive(pubsub, on_control)
            except Exception as exc:
                if listener.up or backoff.first:
                    log.warning(
                        "bus: subscriber lost %s: %s: %s", listener.name, type(exc).__name__, exc
                    )
                listener.up = False
                self._remap = True  # the slot may have moved: the map is read again
                # The publisher's connection to it is most likely dead too: renewed now, not
                # by losing the next batch.
                target = self._targets.get(listener.name)
                if target is not None:
                    await self._drop_target(target)
                self._listener_changed(listener)
                await backoff.wait()
            finally:
                listener.tried.set()  # whatever ended it: the first regrouping waits on it
                listener.up, listener.pubsub = False, None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()

    def _listener_changed(self, listener: _Listener) -> None:
        """A listener connected or failed: regroup (what changed meanwhile), update `connected`."""
        listener.tried.set()
        self._sub_up = all(other.up for other in self._listeners.values())
        self._regions_changed.set()

    async def _subscribe_to(self, pubsub: PubSub, channels: list[str]) -> None:
        # One command per channel: SSUBSCRIBE refuses channels of several slots (CROSSSLOT),
        # and a master owns many regions' slots. Sent without waiting for the replies.
        for channel in channels:
            await pubsub.ssubscribe(wire_name(channel))

    async def _unsubscribe_from(self, pubsub: PubSub, channels: list[str]) -> None:
        for channel in channels:
            await pubsub.sunsubscribe(wire_name(channel))

    def _confirmation_of(self, channel: str) -> bytes:
        return wire_name(channel).encode()

    def _channel_of(self, heard: bytes) -> str:
        return bus_channel(heard.decode())

    def _deliver(self, channel: bytes, payload: bytes) -> None:
        own = payload.startswith(self._own)
        if channel == _NEW_REGIONS_BYTES:
            region, window = unwrap_copy(payload)
            own = window.startswith(self._own)
            if not own and not self._copies.first(region, window, copy=True, now=time.monotonic()):
                self.received_bytes += len(payload)
                return  # its original was heard
            channel, payload = wire_name(region).encode(), window
        elif self._heard_all and not own and channel.startswith(_REGION_WIRE_START):
            # Hearing every region, hence NEW_REGIONS too: the copy may come after it.
            region = self._channel_of(channel)
            if not self._copies.first(region, payload, copy=False, now=time.monotonic()):
                self.received_bytes += len(payload)
                return
        super()._deliver(channel, payload)
