"""One replica's core: what happens to positions, statuses, events and bus messages.

The node owns the coalescer, the live position map, the hub and the writers. Sessions and REST
handlers call it; the bus hands it other replicas' messages. It never awaits a socket or the
database on the position path.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gateway import gc_pauses, protocol
from gateway.breaker import (
    BREAKER_NAMES,
    DATABASE_BREAKER,
    REDIS_BREAKER,
    BreakerConfig,
    BreakerRegistry,
)
from gateway.bus import Bus
from gateway.bus.base import EVENTS, WORLD, command_channel
from gateway.bus.messages import (
    EVERYONE,
    Alive,
    BadMessage,
    Command,
    CommandOutcome,
    Deleted,
    Drain,
    Event,
    Joined,
    Kick,
    Left,
    Message,
    Online,
    PositionRow,
    PositionsWindow,
    Status,
    Sync,
    WorldSections,
    decode,
    encode,
)
from gateway.cache import Cache
from gateway.config import Settings
from gateway.core.coalescer import Coalescer
from gateway.core.commands import CommandRouter
from gateway.core.guards import GuardedPresence, GuardedStore
from gateway.core.hub import Hub
from gateway.core.journal import Journal
from gateway.core.late_windows import LateWindows
from gateway.core.learning import TASK_EVENTS, apply_task, parse_task
from gateway.core.leaves import LeaveLog
from gateway.core.peers import PeerWatch
from gateway.core.registry import Registry
from gateway.core.task_owner import TaskOwner
from gateway.core.telemetry import Telemetry
from gateway.core.ticker import Ticker
from gateway.core.writers import (
    MetricsBatcher,
    PassthroughPositionWriter,
    PositionWriter,
    ProfileUpdater,
    Registrar,
    SectionWriter,
    StatusWriter,
)
from gateway.history import Entry, History, HistoryRing
from gateway.pending import PendingCommands
from gateway.presence import Presence
from gateway.protocol import CloseCode
from gateway.regions import (
    POSITIONS_PREFIX,
    REGION_BLOCKS,
    region_channel,
    wanted_channels,
)
from gateway.store import Store, StoreUnavailable
from gateway.types import MetricRow, PositionUpdate
from gateway.world.model import WorldModel
from gateway.world.sections import Blocks, Chunk

if TYPE_CHECKING:
    from gateway.workers import WorkerPool

log = logging.getLogger(__name__)

PRESENCE_HEARTBEAT_S = 5.0  # a third of the Redis presence TTL (15 s)
PEER_SILENCE_S = 15.0  # a replica not heard for the presence TTL is taken for dead
RETENTION_EVERY_S = 3600.0  # metrics retention runs at start, then this often
RETENTION_RETRY_S = 60.0  # sooner while the database is down
GC_CHURN_CONNECTIONS = 100  # closed connections that make a periodic full collection due
GC_QUIET_ROUNDS = 20  # ... or any, after this many periods (10 min at the default 30 s)
DRAIN_SETTLE_S = 5.0  # a drain waits this long for requests in flight to be answered
JOURNAL_ADOPT_EVERY_S = 30.0  # how soon survivors take over a killed sibling's journal
WORLD_MESSAGE_SECTIONS = 1024  # sections per bus message (512 KiB): a tick may send several


def now_ms() -> int:
    return int(time.time() * 1000)


class Node:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        bus: Bus,
        presence: Presence,
        cache: Cache,
        history: History,
        pending: PendingCommands,
        *,
        worker_pool: WorkerPool | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.settings = settings
        self.replica = settings.replica_id
        self.breakers = BreakerRegistry()
        # Presence calls fail in milliseconds; a 60 s lockout after Redis returns would hide
        # every other replica's bots from this one for a minute.
        self.breakers.get(REDIS_BREAKER, BreakerConfig(reset_timeout=10.0))
        self.breakers.get(
            DATABASE_BREAKER, BreakerConfig(reset_timeout=settings.db_breaker_reset_s)
        )
        for name in BREAKER_NAMES:
            self.breakers.get(name)
        self.telemetry = Telemetry()
        # Every background task of this replica (closes, acks, jobs): failures are logged,
        # shutdown awaits them.
        self.tasks = TaskOwner("node")
        self.hub = Hub(
            settings.viewer_stall_s, self.telemetry, self.tasks, bot_stall_s=settings.bot_stall_s
        )
        self._window_started: float | None = None  # monotonic time of the window's first update
        self.store = GuardedStore(store, self.breakers[DATABASE_BREAKER])
        self.bus = bus
        self.presence = GuardedPresence(
            presence,
            self.breakers[REDIS_BREAKER],
            self.replica,
            local_bots=lambda: self.hub.bots.keys(),
            known_online=self.known_online,
        )
        self.cache = cache
        # Every event, numbered once for the cluster; the ring is this replica's window of it.
        self.history = history
        self.history_ring = HistoryRing(settings.history_events, settings.history_seconds * 1000)
        self.recoveries = {"ok": 0, "failed": 0}
        self.commands = CommandRouter(
            self.replica,
            self.hub,
            bus,
            self.presence,
            cache,
            pending,
            self._npc_known,
            float(settings.command_queue_s),
        )
        self.coalescer = Coalescer()
        # Latest position per NPC as broadcast (this replica's, and others' in the regions it
        # hears): snapshots and REST overlay it on the store, which every replica writes to.
        self.live: dict[str, PositionUpdate] = {}
        self.heard_regions: set[str] | None = set()  # region channels heard; None: all
        self.hub.on_views_changed = self.update_regions
        # Remote windows heard this turn of the loop, by cut, shown together (_show_remote).
        self._remote: dict[int, dict[str, PositionUpdate]] = {}
        self._remote_flush_due = False
        self.windows_published = 0  # region messages sent to the other replicas
        self._live_ts: dict[str, int] = {}  # ms of the frame that set `live[npc]`: order guard
        self.recent_status: dict[str, str] = {}  # statuses seen on any replica since start
        self.peers = PeerWatch(silence_s=PEER_SILENCE_S)
        self.bus_rejected = 0  # bus payloads that did not decode
        self.leaves = LeaveLog()  # every `left` viewers were told, for snapshots read meanwhile
        self.late_windows = LateWindows()  # peers' leaves, against their windows that trail them
        self.registry = Registry(self.store, cache, self.presence, self.live, self.recent_status)
        # NPCs dropped from `live` while not heard: stale until they move again in hearing.
        self._forgotten: set[str] = set()
        self.registry.unheard = lambda npc: self.heard_regions is not None or npc in self._forgotten
        self.passthrough = settings.tick_ms == 0
        self.positions: PositionWriter | PassthroughPositionWriter = (
            PassthroughPositionWriter(self.store.write_positions)
            if self.passthrough
            else PositionWriter(self.store.write_positions)
        )
        self.statuses = StatusWriter(self.registry.set_status)
        self.metrics = MetricsBatcher(
            self._write_metrics,
            settings.metrics_batch,
            settings.metrics_flush_ms,
            journal=journal,
        )
        self.profiles = ProfileUpdater(self.store.update_profile, self.registry.profile_changed)
        # Bots that connected while the database was down: registered before their data.
        self.registrations = Registrar(self.registry.ensure)
        for writer in (self.positions, self.statuses, self.metrics, self.profiles):
            writer.before = self.registrations.settle
        # The shared world model (§9): sections bots report, read in place by the workers.
        self.world = WorldModel(
            settings.world_sections,
            margin_xz=settings.world_margin_xz,
            margin_y=settings.world_margin_y,
        )
        self.sections = SectionWriter(self.store.write_sections)
        self.ticker = Ticker(settings.tick_ms / 1000, self.tick) if not self.passthrough else None
        self._gc_full_collections = 0
        self._gc_last_pause_s = 0.0
        self._gc_pauses = gc_pauses.install()
        self.state = "starting"  # -> "ok" -> "draining"
        self._drained: asyncio.Future[None] | None = None
        self.worker_pool = worker_pool  # None: this build has no pathfinding

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self._load_world()
        await self.bus.start(self.replica, self.on_bus_message)
        await self.history.start(self._on_history_entry)
        self.sections.start()
        self.registrations.start()
        self.positions.start()
        self.statuses.start()
        self.metrics.start()
        self._adopt_journaled()
        self.profiles.start()
        if self.ticker is not None:
            self.ticker.start()
        self.tasks.run_loop(self.hub.watch_stalls(), "stall-watcher")
        self.tasks.run_loop(self._presence_heartbeat(), "presence")
        self.tasks.run_loop(self._retention_loop(), "metrics-retention")
        self.tasks.run_loop(self._collect_loop(), "gc-full")
        if self.metrics.journal is not None:
            self.tasks.run_loop(self._journal_loop(), "journal-adopt")
        self.state = "ok"

    async def _presence_heartbeat(self) -> None:
        """Keep this replica's claims alive (and re-create them after a Redis restart), tell
        the others we are alive, and say `left` for the bots of replicas that went silent."""
        reconnects = self._bus_reconnects()
        while True:
            await asyncio.sleep(PRESENCE_HEARTBEAT_S)
            self._publish(EVENTS, Alive())
            now_reconnects = self._bus_reconnects()
            if now_reconnects != reconnects:
                # Our bus was down: whatever `joined`/`left` crossed meanwhile is lost, both
                # ways. Every replica re-announces its bots (docs/reliability.md).
                reconnects = now_reconnects
                self._publish(EVENTS, Sync(to=EVERYONE))
                self._announce_held()
            for npc in self.peers.expire(time.monotonic()):
                if npc not in self.hub.bots:
                    self.tell_viewers("left", npc, self.live.get(npc))
            lost = await self.presence.refresh(self.replica, list(self.hub.bots))
            for npc in lost:  # another replica took the bot over and we missed the kick
                bot = self.hub.bots.get(npc)
                if bot is not None:
                    bot.replaced = True
                    self._spawn_close(bot, CloseCode.REPLACED, "replaced by a newer connection")

    async def _collect_loop(self) -> None:
        """A full collection every `gc_full_every_s` while connections come and go: what they
        leave in cycles is freed within that time instead of when the thresholds finally call
        for it. A full collection of a big heap stalls the loop (some 90 ms with 2,500 bots),
        so a steady fleet is not collected: only after GC_CHURN_CONNECTIONS closed connections,
        or after any once GC_QUIET_ROUNDS periods have passed."""
        every = self.settings.gc_full_every_s
        if every <= 0:
            return
        collected_at = self.hub.connections_closed
        rounds = 0
        while True:
            await asyncio.sleep(every)
            rounds += 1
            closed = self.hub.connections_closed - collected_at
            if closed < GC_CHURN_CONNECTIONS and not (closed and rounds >= GC_QUIET_ROUNDS):
                continue
            collected_at, rounds = self.hub.connections_closed, 0
            started = time.perf_counter()
            gc.collect()
            self._gc_last_pause_s = time.perf_counter() - started
            self._gc_full_collections += 1

    async def _journal_loop(self) -> None:
        """Sibling processes share the data directory (`--processes`): one that was killed
        leaves its journal to the survivors, not only to its own restart."""
        while True:
            await asyncio.sleep(JOURNAL_ADOPT_EVERY_S)
            self._adopt_journaled()

    def _adopt_journaled(self) -> None:
        """Metric rows a killed process journaled and never wrote: accepted again, here."""
        journal = self.metrics.journal
        if journal is None:
            return
        for orphan in journal.adopt_orphans():
            for npc, name, value, ts in orphan.records:
                self.metrics.add(MetricRow(npc, name, value, ts))
            journal.discard(orphan)  # after: its rows are in our own segment now
            log.warning("journal: %d metric rows of a dead process accepted", len(orphan.records))
            self.metrics.flush_soon()

    def _journal_stats(self) -> dict[str, Any] | None:
        journal = self.metrics.journal
        if journal is None:
            return None
        return {"heldRows": journal.held, "segments": journal.segments, "adopted": journal.adopted}

    def gc_stats(self) -> dict[str, Any]:
        return {
            "fullCollections": self._gc_full_collections,
            "lastFullPauseMs": round(self._gc_last_pause_s * 1000, 2),
            "everyS": self.settings.gc_full_every_s,
            "pauses": self._gc_pauses.stats(),
        }

    async def _retention_loop(self) -> None:
        """GATEWAY_METRICS_RETENTION: drop expired metrics (partitions on PostgreSQL)."""
        retention_ms = self.settings.metrics_retention_s * 1000
        while True:
            delay = RETENTION_EVERY_S
            try:
                report = await self.store.maintain_metrics(retention_ms, now_ms())
                if report.partitions_dropped or report.rows_deleted:
                    log.info(
                        "metrics retention: %d partitions and %d rows dropped",
                        report.partitions_dropped,
                        report.rows_deleted,
                    )
            except StoreUnavailable:
                delay = RETENTION_RETRY_S
            except Exception:
                log.exception("metrics retention failed")
            await asyncio.sleep(delay)

    async def _load_world(self) -> None:
        """The model as stored (it survives restarts); a store that is down starts it empty."""
        try:
            rows = await self.store.load_sections()
        except StoreUnavailable as exc:
            log.warning("world model starts empty: the store is unavailable (%s)", exc)
            return
        self.world.apply_rows(rows)
        self.world.sections_remote = 0  # loaded, not heard from peers
        log.info("world model: %d sections loaded", len(rows))

    def _bus_reconnects(self) -> int:
        return int(self.bus.stats().get("reconnects", 0))

    def _announce_held(self) -> None:
        """Tell every replica exactly which bots this one holds."""
        self._publish(EVENTS, Online(npcs=list(self.hub.bots)))

    def tell_viewers(self, kind: str, npc: str, about: PositionUpdate | None) -> None:
        """`joined` / `left` to this replica's viewers: a change of its view of who is online."""
        if kind == "left":
            self.leaves.left(npc)
        self.hub.broadcast_message(protocol.online_change(kind, npc), about)

    def known_online(self) -> set[str]:
        """This replica's view of who is online: its bots and those the others announced."""
        return self.hub.bots.keys() | self.peers.announced()

    def _apply_held(self, sender: str, ids: Sequence[str]) -> None:
        """Another replica's full list of bots: the `joined`/`left` our viewers missed."""
        joined, gone = self.peers.replace(sender, ids)
        for npc in joined:
            if npc not in self.hub.bots:
                self.tell_viewers("joined", npc, self.live.get(npc))
        for npc in gone:
            if npc not in self.hub.bots:
                self.tell_viewers("left", npc, self.live.get(npc))

    async def drain(self, deadline_s: float = 10.0) -> None:
        """Shutdown: answer what is in flight, stop ticking, deliver and write the current
        window, close every socket. Once: every caller (the signal, the app's shutdown hook,
        the replica's exit) awaits the same drain."""
        if self._drained is None:
            self._drained = asyncio.ensure_future(self._drain(deadline_s))
        await asyncio.shield(self._drained)

    async def _drain(self, deadline_s: float) -> None:
        self.state = "draining"  # no new connections from here on
        # Path requests, acks, queued commands being delivered: answered before the sockets
        # close, if they can be within the deadline.
        unfinished = await self.tasks.settle(DRAIN_SETTLE_S)
        if unfinished:
            log.warning("shutdown: %d tasks still running after %.0f s", unfinished, DRAIN_SETTLE_S)
        if self.ticker is not None:
            await self.ticker.stop()
        self.tick()
        writers = (
            self.registrations,
            self.positions,
            self.statuses,
            self.metrics,
            self.profiles,
            self.sections,
        )
        for writer in writers:
            await writer.stop()
        await self.hub.close_all(CloseCode.GOING_AWAY, "gateway shutting down")
        for writer in writers:
            if not await writer.flush_now(deadline_s):
                log.error("shutdown: %d items could not be written", writer.pending)

    async def close(self) -> None:
        await self.tasks.close(deadline_s=5.0)
        await self.history.close()
        await self.bus.close()
        self.world.close()
        if self.metrics.journal is not None:
            self.metrics.journal.close()

    # -- positions ----------------------------------------------------------------------------

    def accept_position(self, update: PositionUpdate) -> None:
        """The hot path: one bot's validated position."""
        if self.passthrough:
            self.coalescer.items_processed += 1
            window = {update["id"]: update}
            self._deliver_window(window)
            self.positions.submit(window)
        else:
            if self._window_started is None:
                self._window_started = time.monotonic()
            self.coalescer.add(update)

    def tick(self) -> None:
        """Cut the window: broadcast it, publish it once, and hand it to the writer."""
        window = self.coalescer.cut()
        if window:
            started = time.monotonic()
            self._deliver_window(window)
            self.positions.submit(window)
            done = time.monotonic()
            self.telemetry.tick_seconds.observe(done - started)
            if self._window_started is not None:
                self.telemetry.ingest_to_send_seconds.observe(done - self._window_started)
        self._window_started = None
        self._flush_world()

    # -- the world model ----------------------------------------------------------------------

    def accept_chunk(self, chunk: Chunk, ref: Any = None) -> bool:
        """A bot's section: searchable at once here, on other replicas and in the store after
        the next tick. False when the model is full."""
        stored = self.world.accept_chunk(chunk, ref)
        if self.passthrough:
            self._flush_world()
        return stored

    def accept_blocks(self, blocks: Blocks) -> int:
        applied = self.world.accept_blocks(blocks)
        if self.passthrough:
            self._flush_world()
        return applied

    def _flush_world(self) -> None:
        """This tick's changed sections: one bus message (a few for very busy ticks), one write."""
        rows = self.world.cut()
        if not rows:
            return
        for i in range(0, len(rows), WORLD_MESSAGE_SECTIONS):
            part = rows[i : i + WORLD_MESSAGE_SECTIONS]
            self._publish(WORLD, WorldSections(rows=part))
        self.sections.submit(rows)

    def _deliver_window(self, window: dict[str, PositionUpdate]) -> None:
        ts = now_ms()
        # One replica on its in-process bus has nobody to tell: no regions, nor what they need.
        publish = not self.bus.alone()
        if publish:  # taken before `live` moves on: border crossings go to both regions
            previous = {npc: self.live[npc] for npc in window if npc in self.live}
        # Broadcast before `live` moves on: the hub compares with the previous positions.
        self.hub.broadcast_positions(window, ts, self.live)
        self.live.update(window)
        if self._forgotten:
            self._forgotten.difference_update(window)
        self._live_ts.update(dict.fromkeys(window, ts))
        if publish:
            self._publish_regions(window, previous, ts)

    def _publish_regions(
        self, window: dict[str, PositionUpdate], previous: dict[str, PositionUpdate], ts: int
    ) -> None:
        """One message per region with movement. An NPC that crossed a border also goes to
        the region it left, so the replicas hearing only that one see it go (§11)."""
        # Hot path: group by (dim, rx, rz) tuples; a channel name is formatted once per region.
        by_region: dict[tuple[str, float, float], list[PositionRow]] = {}
        for npc, u in window.items():
            x, z, dim = u["x"], u["z"], u["dim"]
            row: PositionRow = (npc, x, u["y"], z, u["yaw"], u["pitch"], dim)
            key = (dim, x // REGION_BLOCKS, z // REGION_BLOCKS)
            rows = by_region.get(key)
            if rows is None:
                by_region[key] = [row]
            else:
                rows.append(row)
            before = previous.get(npc)
            if before is not None:
                left = (before["dim"], before["x"] // REGION_BLOCKS, before["z"] // REGION_BLOCKS)
                if left != key:
                    by_region.setdefault(left, []).append(row)
        for (dim, rx, rz), rows in by_region.items():
            channel = f"{POSITIONS_PREFIX}{dim}:{int(rx)}:{int(rz)}"
            self._publish(channel, PositionsWindow(ts=ts, rows=rows))
        self.windows_published += len(by_region)

    def update_regions(self) -> None:
        """Hear the regions this replica's viewers watch (all of them while one has no
        filter, none without viewers); forget remote positions nobody will update now."""
        viewers = self.hub.viewers
        wanted = wanted_channels((v.dim, v.area) for v in viewers) if viewers else set()
        if wanted == self.heard_regions:
            return
        self.heard_regions = wanted
        self.bus.set_positions(wanted)
        if wanted is not None:
            for npc in [n for n, u in self.live.items() if not self._hears(n, u)]:
                del self.live[npc]
                self._forgotten.add(npc)

    def region_stats(self) -> dict[str, Any]:
        """`regions`: region channels heard; `allRegions`: every region is (docs/scaling.md);
        `windowsPublished`: region messages sent (none while alone on an in-process bus); and
        `rejected`: payloads that were not a message (next to the bus backend's figures)."""
        heard = self.heard_regions
        return {
            "regions": 0 if heard is None else len(heard),
            "allRegions": heard is None,
            "windowsPublished": self.windows_published,
            "rejected": self.bus_rejected,
        }

    def _hears(self, npc: str, u: PositionUpdate) -> bool:
        """Whether `live[npc]` stays fresh: our own bot, or a region we hear."""
        heard = self.heard_regions
        return (
            heard is None
            or npc in self.hub.bots
            or region_channel(u["dim"], u["x"], u["z"]) in heard
        )

    # -- other bot messages -------------------------------------------------------------------

    def accept_status(self, npc_id: str, status: str) -> None:
        self.statuses.submit(npc_id, status)
        self.status_changed(npc_id, status)

    def status_changed(self, npc_id: str, status: str) -> None:
        """Tell every replica's viewers (the store already has it)."""
        self._announce(Status(npc=npc_id, status=status))

    def accept_metric(self, row: MetricRow) -> None:
        self.metrics.add(row)

    def accept_event(self, npc_id: str, name: str, data: dict[str, Any], ref: Any = None) -> None:
        """Publish a bot's event; task outcomes also become a metric and teach its profile."""
        outcome = parse_task(name, data, ref) if name in TASK_EVENTS else None
        # Numbered in the history; every replica's viewers get it from there, in one order.
        where = self.live.get(npc_id)
        about = None if where is None else {"dim": where["dim"], "x": where["x"], "z": where["z"]}
        self.history.append(protocol.event(npc_id, name, data), about)
        if name.startswith("task:"):
            self.metrics.add(MetricRow(npc_id, name, 1.0, now_ms()))
        if outcome is not None:
            ok, task, xp, skill = outcome
            at = now_ms()
            self.profiles.submit(
                npc_id, lambda profile: apply_task(profile, ok, task, xp, skill, at)
            )

    def bot_joined(self, npc_id: str) -> None:
        self._announce(Joined(npc=npc_id))

    def bot_left(self, npc_id: str) -> None:
        # Our last window with it: one still on its way (on another master of a Redis Cluster)
        # must not bring it back once the `left` is shown.
        self._announce(Left(npc=npc_id, ts=self._live_ts.get(npc_id, 0)))

    def npc_deleted(self, npc_id: str) -> None:
        """Forget the NPC everywhere and close its bot (4404) on whichever replica holds it."""
        self._announce(Deleted(npc=npc_id))

    def kick_elsewhere(self, npc_id: str, holder: str) -> None:
        """A newer connection for the NPC arrived here: the older one elsewhere closes (4409)."""
        self._publish(command_channel(holder), Kick(npc=npc_id))

    def _announce(self, event: Event) -> None:
        """Apply an event locally and publish it to the other replicas."""
        self._apply_event(None, event)
        self._publish(EVENTS, event)

    def _apply_event(self, sender: str | None, event: Event) -> None:
        """An event from another replica (`sender`), or from this one (None)."""
        match event:
            case Online(npcs) if sender is not None:
                self._apply_held(sender, npcs)
            case Sync(to):
                if to in (self.replica, EVERYONE):
                    self._announce_held()
            case Status(npc, status):
                self.recent_status[npc] = status
                self.hub.broadcast_message(protocol.status(npc, status), self.live.get(npc))
            # A peer's `joined` / `left` already known: a full list (`Online`) or the silence
            # rule told the viewers.
            case Joined(npc):
                if sender is None or self.peers.joined(npc, sender):
                    self.tell_viewers("joined", npc, self.live.get(npc))
            case Left(npc, ts):
                if sender is not None:
                    self.late_windows.left(npc, sender, ts, time.monotonic())
                if sender is None or self.peers.left(npc, sender):
                    self.tell_viewers("left", npc, self.live.get(npc))
            case Deleted(npc):
                self._forget(npc)

    def _forget(self, npc: str) -> None:
        """A deleted NPC: gone from every view; its bot, if here, closes (4404)."""
        about = self.live.pop(npc, None)
        self._forgotten.discard(npc)
        self._live_ts.pop(npc, None)
        self.recent_status.pop(npc, None)
        self.coalescer.discard(npc)
        self.positions.discard(npc)
        self.registrations.discard(npc)
        bot = self.hub.bots.get(npc)
        if bot is not None:
            bot.announce_left = False  # the `left` below is the only one
            self._spawn_close(bot, CloseCode.DELETED, "npc deleted")
        self.tell_viewers("left", npc, about)

    def _on_history_entry(self, entry: Entry) -> None:
        """A numbered event (from this replica or another): keep it, show it."""
        self.history_ring.add(entry)
        self.hub.broadcast_event(entry)

    def _spawn_close(self, bot: Any, code: int, why: str) -> None:
        self.tasks.spawn(bot.close(code, why), "close-bot")

    # -- the bus ------------------------------------------------------------------------------

    def _publish(self, channel: str, message: Message) -> None:
        self.bus.publish(channel, encode(self.replica, message))

    def on_bus_message(self, channel: str, payload: bytes) -> None:
        """Another replica's message (the bus never hands us our own)."""
        try:
            sender, message = decode(payload)
        except BadMessage as exc:
            self.bus_rejected += 1
            log.warning("bus: dropping a message on %s: %s", channel, exc)
            return
        try:
            if self.peers.heard(sender, time.monotonic()):
                # New to us, or back after a gap: ask for its bots (ours go along unasked).
                self._publish(EVENTS, Sync(to=sender))
                self._announce_held()
            self._dispatch(sender, message)
        except Exception:
            log.exception("bad bus message on %s", channel)

    def _dispatch(self, sender: str, message: Message) -> None:
        if self._remote and type(message) is not PositionsWindow:
            self._show_remote()  # positions heard before an event reach viewers before it
        match message:
            case PositionsWindow(ts, rows):
                self._apply_remote_window(sender, ts, rows)
            case WorldSections(rows):
                self.world.apply_rows(rows)
            case Command() | CommandOutcome():
                self.commands.on_bus(sender, message)
            case Drain(npc):  # a command was queued for a bot we hold
                self.tasks.spawn(self.commands.on_drain(npc), "deliver-queued")
            case Kick(npc):
                self._kicked(npc)
            case _:
                self._apply_event(sender, message)

    def _apply_remote_window(self, sender: str, ts: int, rows: Sequence[PositionRow]) -> None:
        """Another replica's window for one region: merged into our viewers' view unless it is
        older than what they already have for an NPC (a bot that moved between replicas:
        never go backwards).

        A replica publishes one message per region per tick and Redis hands them over
        together: they are gathered until this turn of the event loop ends and go to the
        viewers as one frame per cut, and an NPC that crossed a border (sent to both
        regions) is in it once (should the two arrive in different turns, it is sent twice:
        a repeat, never a step back). Rows of an NPC the sender said `left` after this cut
        are dropped: the window trailed the `left` (gateway/core/late_windows.py)."""
        seen = self._live_ts
        rows = self.late_windows.on_time(sender, ts, rows, time.monotonic())
        window = self._remote.get(ts)
        if window is None:
            window = self._remote[ts] = {}
        for npc, x, y, z, yaw, pitch, dim in rows:
            if seen.get(npc, 0) <= ts:  # equal: the same cut from another region, or a cut
                # made in the same millisecond (tests cut windows by hand): never a step back
                window[npc] = {
                    "id": npc,
                    "x": x,
                    "y": y,
                    "z": z,
                    "yaw": yaw,
                    "pitch": pitch,
                    "dim": dim,
                }
                seen[npc] = ts
        if not self._remote_flush_due:
            self._remote_flush_due = True
            asyncio.get_running_loop().call_soon(self._show_remote)

    def _show_remote(self) -> None:
        """The remote windows gathered this turn, one frame per cut."""
        self._remote_flush_due = False
        gathered, self._remote = self._remote, {}
        for ts, window in gathered.items():
            if not window:
                continue
            self.hub.broadcast_positions(window, ts, self.live)
            self.live.update(window)
            if self._forgotten:
                self._forgotten.difference_update(window)
            if self.heard_regions is not None:
                # Gone to a region we do not hear: nothing will update it here any more.
                for npc, u in window.items():
                    if not self._hears(npc, u):
                        del self.live[npc]
                        self._forgotten.add(npc)

    def _kicked(self, npc: str) -> None:
        """A newer connection for the NPC arrived on another replica: ours closes (4409)."""
        bot = self.hub.bots.get(npc)
        if bot is not None:
            bot.replaced = True
            self._spawn_close(bot, CloseCode.REPLACED, "replaced by a newer connection")

    async def _npc_known(self, npc_id: str) -> bool:
        """Whether the NPC is registered; while the database is down, assume it is (a
        command queued for nobody expires, one refused for a real bot would be lost)."""
        try:
            return await self.registry.get(npc_id) is not None
        except StoreUnavailable:
            return True

    def command_acked(self, npc_id: str, command_id: str | int) -> None:
        """A bot confirmed a command: recorded where every replica can look it up."""
        self.tasks.spawn(self.commands.acked(npc_id, command_id), "record-ack")

    # -- writes -------------------------------------------------------------------------------

    async def _write_metrics(self, rows: list[MetricRow]) -> int:
        written: int = await self.store.insert_metrics(rows)
        await self.registry.invalidate_metrics()
        return written

    # -- figures ------------------------------------------------------------------------------

    def history_stats(self) -> dict[str, Any]:
        """The event history (§11): this replica's window, resumes, and the backend."""
        ring = self.history_ring
        return {
            **self.history.stats(),
            "epoch": ring.epoch,
            "length": len(ring),
            "oldestSeq": ring.oldest_seq,
            "lastSeq": ring.last_seq,
            "restarts": ring.restarts,
            "recoveries": dict(self.recoveries),
        }

    def batch_stats(self) -> dict[str, Any]:
        c = self.coalescer
        return {
            "positions": {
                "totalBatches": c.total_batches
                if not self.passthrough
                else self.positions.batches_written,
                "itemsProcessed": c.items_processed,
                "itemsCoalesced": c.items_coalesced,
                "pendingItems": c.pending,
                "unwrittenItems": self.positions.pending,
                "batchesWritten": self.positions.batches_written,
                "writeFailures": self.positions.failures,
                "rejectedItems": self.positions.rejected,
                "dropped": self.positions.dropped,
            },
            "metrics": {
                "totalBatches": self.metrics.total_batches,
                "itemsProcessed": self.metrics.items_processed,
                "pendingItems": self.metrics.pending,
                "dropped": self.metrics.dropped,
                "writeFailures": self.metrics.failures,
                "rejectedItems": self.metrics.rejected,
                "journal": self._journal_stats(),
            },
            "statuses": {"pendingItems": self.statuses.pending},
            "registrations": {
                "pending": self.registrations.pending,
                "registered": self.registrations.registered,
                "dropped": self.registrations.dropped,
            },
            "sections": {
                "pendingItems": self.sections.pending,
                "batchesWritten": self.sections.batches_written,
                "itemsWritten": self.sections.items_written,
                "writeFailures": self.sections.failures,
                "rejectedItems": self.sections.rejected,
            },
            "profiles": {
                "pendingItems": self.profiles.pending,
                "applied": self.profiles.applied,
                "dropped": self.profiles.dropped,
            },
        }
