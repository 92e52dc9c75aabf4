"""The Redis bus on a Redis Cluster: sharded pub/sub, every bus channel on one shard.

SPUBLISH delivers a message within the shard that owns its channel's slot, where PUBLISH on a
cluster is broadcast to every node. Every bus channel goes out under the hash tag
`{aicraft:bus}`, so they all share one slot: one master carries the bus, and messages on
different channels keep the order they were published in, as on one Redis (a bot's `left` on
the events channel is never overtaken by its last positions on a region channel). The other
masters carry presence, cache, history and pending commands.

Sharded pub/sub has no pattern subscription. A replica that must hear every region subscribes
to the regions in use instead, which publishers note in a sorted set (REGIONS_KEY, read every
POLL_S), and to NEW_REGIONS, where publishers copy the first windows of a region they start
publishing to (gateway/bus/region_runs.py). Such a batch is one MULTI/EXEC: a subscription
lands before or after all of it, so a copy is dropped exactly when its region's own channel was
confirmed earlier on the same connection: nothing is lost or heard twice.

redis-py's asyncio cluster pub/sub is not used: it reads its per-node connections in turn,
each with the full timeout, so a message waits out the others' silence. The bus needs one
connection to one master: a plain client on it, looked up again at every reconnect (a restarted
or failed-over master, a moved slot).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, RedisError

from gateway.bus.base import EVENTS
from gateway.bus.redis import RedisBus
from gateway.bus.region_runs import IN_USE_S, RegionRuns
from gateway.redis_pool import AnyRedis, fail_fast_client
from gateway.redis_url import is_cluster_url, node_url
from gateway.regions import is_positions_channel

log = logging.getLogger(__name__)

TAG = "{aicraft:bus}"
REGIONS_KEY = TAG + ":regions"  # region channel -> when a publisher last noted it (ms)
NEW_REGIONS = "aicraft:pos-new"  # copies of new regions' windows (not a region channel)
POLL_S = 1.0  # how often a replica hearing every region reads the regions in use


def redis_bus(url: str) -> RedisBus:
    """The Redis bus for `url`: on a cluster (`redis+cluster://`), a ClusterBus."""
    return ClusterBus(url) if is_cluster_url(url) else RedisBus(url)


def wire_name(channel: str) -> str:
    """The name a bus channel has on the cluster: under the bus's hash tag."""
    return TAG + channel


def wrap_copy(channel: str, payload: bytes) -> bytes:
    """A window for NEW_REGIONS: its region channel, length first, then the payload."""
    name = channel.encode()
    return len(name).to_bytes(2, "big") + name + payload


def unwrap_copy(copy: bytes) -> tuple[str, bytes]:
    size = int.from_bytes(copy[:2], "big")
    return copy[2 : 2 + size].decode(), copy[2 + size :]


_NEW_REGIONS_WIRE = wire_name(NEW_REGIONS).encode()


class ClusterBus(RedisBus):
    backend = "redis"

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._topology: AnyRedis | None = None  # finds the bus's master
        self._runs = RegionRuns()
        self._confirmed: set[bytes] = set()  # wire channels the live subscription has

    async def close(self) -> None:
        await super().close()
        if isinstance(self._topology, RedisCluster):
            # Only its slot map was ever loaded (see _master_client): close what that opened.
            await self._topology.nodes_manager.aclose()
            await self._topology.nodes_manager.aclose("startup_nodes")
        self._topology = None

    async def _master_client(self, old: AnyRedis | None) -> Redis:
        """A fresh client on the master that owns the bus's slot now; `old` is closed."""
        if old is not None:
            await old.aclose()
        if self._topology is None:
            self._topology = self._client()
        assert isinstance(self._topology, RedisCluster)
        # The slot map only (CLUSTER SLOTS from any seed that answers): the client's own
        # initialize() also asks one fixed master for its command table, and fails while
        # that one is down, whichever master the bus is on.
        await self._topology.nodes_manager.initialize()
        node = self._topology.get_node_from_key(TAG)
        url = node_url(self._url, node.host, node.port)
        client = fail_fast_client(url, self._connect_timeout_s, self._socket_timeout_s)
        assert isinstance(client, Redis)
        return client

    # -- publishing ----------------------------------------------------------------------

    async def _connect_publisher(self) -> None:
        self._runs.reset()
        self._pub = await self._master_client(self._pub)
        await self._pub.ping()

    async def _send(self, batch: list[tuple[str, bytes]]) -> None:
        assert self._pub is not None
        regions = {c for c, _ in batch if is_positions_channel(c)}
        new, due = self._runs.sent(regions, time.monotonic()) if regions else (set(), set())
        try:
            # Atomic only when it carries copies (see the module's docstring).
            await self._spublish(batch, new, atomic=bool(new))
        except ClusterDownError:
            if not new:
                raise
            # A cluster that lost a master refuses EXEC (nothing ran), not SPUBLISH. Atomicity
            # can go: nobody's region subscriptions change while the registry is refused too.
            await self._spublish(batch, new, atomic=False)
        self.published_bytes += sum(len(payload) for _, payload in batch)
        if due:
            await self._note(due)

    async def _spublish(
        self, batch: list[tuple[str, bytes]], new: set[str], *, atomic: bool
    ) -> None:
        """Send `batch`, with copies of the windows of the `new` regions."""
        assert self._pub is not None
        async with self._pub.pipeline(transaction=atomic) as pipe:
            for channel, payload in batch:
                pipe.spublish(wire_name(channel), payload)
                if channel in new:
                    pipe.spublish(wire_name(NEW_REGIONS), wrap_copy(channel, payload))
            await pipe.execute()

    async def _note(self, channels: set[str]) -> None:
        """Note `channels` as in use now, and drop the regions nobody noted for IN_USE_S.
        Best effort, apart from the windows: a cluster that lost another master still carries
        SPUBLISH but refuses ZADD (CLUSTERDOWN); a region is noted again NOTE_EVERY_S later."""
        assert self._pub is not None
        now_ms = int(time.time() * 1000)
        try:
            async with self._pub.pipeline(transaction=False) as pipe:
                pipe.zadd(REGIONS_KEY, dict.fromkeys(channels, now_ms))
                pipe.zremrangebyscore(REGIONS_KEY, "-inf", now_ms - int(IN_USE_S * 1000))
                await pipe.execute()
        except RedisError as exc:
            log.debug("bus: could not note regions in use: %s", exc)

    # -- subscribing ---------------------------------------------------------------------

    async def _new_pubsub(self) -> PubSub:
        self._confirmed = set()
        self._sub = await self._master_client(self._sub)
        return self._sub.pubsub()

    async def _regions_to_hear(self) -> set[str]:
        """The wanted regions, or (every region) those in use and NEW_REGIONS; while the
        registry cannot be read (CLUSTERDOWN), what is heard already."""
        wanted = self._wanted
        if wanted is not None:
            return set(wanted)
        assert self._sub is not None
        since_ms = int(time.time() * 1000) - int(IN_USE_S * 1000)
        try:
            in_use = await self._sub.zrangebyscore(REGIONS_KEY, since_ms, "+inf")
        except ClusterDownError as exc:
            log.debug("bus: cannot read the regions in use: %s", exc)
            return self._heard | {NEW_REGIONS}
        return {c.decode() for c in in_use} | {NEW_REGIONS}

    def _regions_poll_s(self) -> float | None:
        return POLL_S if self._wanted is None else None

    async def _subscribe_to(self, pubsub: PubSub, channels: list[str]) -> None:
        await pubsub.ssubscribe(*(wire_name(c) for c in channels))

    async def _unsubscribe_from(self, pubsub: PubSub, channels: list[str]) -> None:
        await pubsub.sunsubscribe(*(wire_name(c) for c in channels))

    def _confirmation_of(self, channel: str) -> bytes:
        return wire_name(channel).encode()

    def _channel_of(self, heard: bytes) -> str:
        return heard.decode()[len(TAG) :]

    def _on_control(self, kind: str, channel: bytes | None) -> None:
        if channel is None:
            return
        if kind == "ssubscribe":
            self._confirmed.add(channel)
        elif kind == "sunsubscribe":
            if channel == self._confirmation_of(EVENTS):
                # We never drop it: the cluster moved the bus's slot to another master.
                raise RedisError("the bus's slot moved, subscribing again")
            self._confirmed.discard(channel)

    def _deliver(self, channel: bytes, payload: bytes) -> None:
        if channel == _NEW_REGIONS_WIRE:
            region, payload = unwrap_copy(payload)
            channel = wire_name(region).encode()
            if channel in self._confirmed:
                return  # heard on the region's own channel
        super()._deliver(channel, payload)
