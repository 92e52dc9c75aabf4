"""`/ws/npc`: one connected bot — the position hot path, its other messages, its outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from aiohttp import WSMsgType, web

from gateway.auth import Claims, owner_key
from gateway.core.node import Node, now_ms
from gateway.direct_ws import (
    DirectWebSocketResponse,
    LingeringWebSocketResponse,
    dispatch_enabled,
)
from gateway.keys import CLAIMS, NODE
from gateway.outbox import Outbox
from gateway.protocol import (
    BOT_TYPES,
    COMMAND_ID_RE,
    MAX_FRAME_BYTES,
    CloseCode,
    Encoding,
    ErrorCode,
    ProtocolError,
    auth_ok,
    bot_welcome,
    decode,
    encode,
    error,
    message_type,
    parse_ack,
    parse_auth,
    parse_event,
    parse_metric,
    parse_position,
    parse_status,
    pong,
)
from gateway.ratelimit import FloodGuard
from gateway.sessions import RATE_LIMITED, WEBSOCKET_OPTIONS, encoding_of, frame_type_of
from gateway.store import StoreUnavailable
from gateway.token_deadline import TokenDeadline
from gateway.world.sections import parse_blocks, parse_chunk

log = logging.getLogger(__name__)

NOT_YOUR_COMMAND = "that command was not sent to this NPC"

BOT_OUTBOX_BYTES = 1 << 20  # unsent output per bot (§5), beyond the socket's own buffer
EARLY_FRAMES_BYTES = 1 << 20  # input held before `welcome` may leave; a flood beyond is dropped
SENT_COMMANDS_KEPT = 1024  # older ids are checked against the command records instead


class BotSession:
    """One connected bot. Outgoing messages go through its outbox, bounded in bytes."""

    __slots__ = (
        "_closing",
        "_early",
        "_early_bytes",
        "_jobs",
        "_sent_commands",
        "announce_left",
        "deadline",
        "encoding",
        "flood",
        "frame_type",
        "last_seen",
        "node",
        "npc_id",
        "outbox",
        "replaced",
        "transport",
        "ws",
    )

    def __init__(self, node: Node, npc_id: str, claims: Claims) -> None:
        self.node = node
        self.npc_id = npc_id
        self.deadline = TokenDeadline(claims, self._expired)  # armed once the session runs
        # Data frames arrive through `on_frame` from the parser itself (see direct_ws).
        self.ws: LingeringWebSocketResponse = (
            DirectWebSocketResponse(self.on_frame, **WEBSOCKET_OPTIONS)
            if dispatch_enabled()
            else LingeringWebSocketResponse(**WEBSOCKET_OPTIONS)
        )
        self.encoding = Encoding.JSON
        self.frame_type = WSMsgType.TEXT  # what data frames of the encoding must be
        self._early: list[tuple[WSMsgType, bytes]] | None = []  # frames before `welcome`
        self._early_bytes = 0
        self.last_seen = time.monotonic()  # any frame or pong: the idle sweep reads it
        self.replaced = False  # closed for a newer connection (or deleted): no `left` from us
        self._closing = False
        self.announce_left = True  # False when the NPC was deleted: `left` went out already
        # Opened once presence holds the bot: only then may `welcome` leave. At most 1 MiB
        # waits for a bot that does not read (§5); a message beyond is refused.
        self.outbox = Outbox(
            self.ws,
            WSMsgType.TEXT,
            max_bytes=BOT_OUTBOX_BYTES,
            spawn=node.tasks.spawn,
            name="bot-writer",
        )
        self.transport: asyncio.Transport | None = None  # aborted if a close cannot get out
        self._jobs: set[asyncio.Task[Any]] | None = None  # path/mining requests, ack checks
        # Command ids this connection was sent (oldest first): their acks need no look-up.
        self._sent_commands: dict[str, None] | None = None
        settings = node.settings
        self.flood = FloodGuard(
            settings.rate_per_s,
            settings.rate_burst,
            time.monotonic(),
            close_after_s=settings.flood_close_s,
        )

    # -- BotLink ------------------------------------------------------------------------------

    def ping(self) -> None:
        """Ask a quiet bot for a sign of life (its pong lands in `on_frame`)."""
        if not self.ws.closed:
            self.node.tasks.spawn(self._ping(), "ping-bot")

    async def _ping(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.ping()

    def send_message(self, message: dict[str, Any]) -> bool:
        """Queue a message; False (nothing queued) if the socket is closed or the outbox is
        full: a bot that does not read gets no more than BOT_OUTBOX_BYTES held for it."""
        if self.ws.closed:
            return False
        return self.outbox.send(encode(message, self.encoding))

    def stalled_for(self, now: float) -> float:
        """How long output has waited for the bot to read it (0 if none waits)."""
        return self.outbox.stalled_for(now)

    def send_command(self, message: dict[str, Any]) -> bool:
        """Deliver an operator's command, remembering its id: only this NPC may ack it, and
        an id this connection already carried is not sent again (§10)."""
        sent = self._sent_commands
        if sent is not None and message["id"] in sent:
            return True
        if not self.send_message(message):
            return False
        if sent is None:
            sent = self._sent_commands = {}
        sent[message["id"]] = None
        if len(sent) > SENT_COMMANDS_KEPT:
            del sent[next(iter(sent))]
        return True

    async def close(self, code: int, message: str) -> None:
        """Close the socket; abort it if the peer is too stuck to take a close frame."""
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message.encode()), 2.0)
        except TimeoutError:  # the close frame is stuck behind output the bot never reads
            if self.transport is not None:
                self.transport.abort()
        except (ConnectionError, RuntimeError):
            pass

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        node = self.node
        self.deadline.arm()
        self.encoding = encoding_of(self.ws)
        self.outbox.opcode = self.frame_type = frame_type_of(self.encoding)
        # `welcome` is queued before anything else can be (a command, an error).
        self.send_message(bot_welcome(self.npc_id, node.replica, node.settings.tick_ms))
        early, self._early = self._early or [], None
        for frame_type, data in early:
            self.on_frame(frame_type, data)
        previous = node.hub.attach_bot(self)
        if previous is not None:
            previous.replaced = True
            await previous.close(CloseCode.REPLACED, "replaced by a newer connection")
        holder = await node.presence.claim(self.npc_id, node.replica)
        if holder is not None:
            node.kick_elsewhere(self.npc_id, holder)
        # Only now may `welcome` leave: once a bot has it, commands from any replica find it.
        self.outbox.open()
        # Commands queued while it was away (§10), from whichever replica took them.
        node.tasks.spawn(node.commands.on_drain(self.npc_id), "deliver-queued")
        if previous is None:
            node.bot_joined(self.npc_id)
        try:
            await self._receive_loop()
        finally:
            await self._finish()

    def _expired(self) -> None:
        if not self._closing:
            self._closing = True
            self.node.tasks.spawn(
                self.close(CloseCode.TOKEN_EXPIRED, "token expired"), "close-expired"
            )

    async def _finish(self) -> None:
        node = self.node
        self.deadline.cancel()
        for job in self._jobs or ():
            job.cancel()
        if node.worker_pool is not None:
            node.worker_pool.cancel_owner(owner_key("npc", self.npc_id))
        if node.hub.detach_bot(self) and not self.replaced:
            await node.presence.release(self.npc_id, node.replica)
            if self.announce_left:
                node.bot_left(self.npc_id)
        self.outbox.cancel()

    async def _receive_loop(self) -> None:
        """Control frames (and, without direct dispatch, data frames) until the socket closes."""
        async for frame in self.ws:
            if frame.type is WSMsgType.ERROR:
                break
            if frame.type is WSMsgType.TEXT or frame.type is WSMsgType.BINARY:
                self.on_frame(frame.type, frame.data)
            elif frame.type is WSMsgType.PONG:
                self.last_seen = time.monotonic()

    def on_frame(self, frame_type: WSMsgType, data: bytes) -> None:
        """One data frame: the hot path. Synchronous; never raises."""
        now = self.last_seen = time.monotonic()
        if frame_type is WSMsgType.PONG:
            return
        if self._early is not None:
            # A bot that floods before `welcome` loses what is beyond the bound.
            if self._early_bytes + len(data) <= EARLY_FRAMES_BYTES:
                self._early_bytes += len(data)
                self._early.append((frame_type, data))
            return
        if self._closing:
            return  # drain what is in flight until the peer answers our close
        if len(data) > MAX_FRAME_BYTES:  # aiohttp enforces it too; the contract is ours
            self._close_once(CloseCode.TOO_BIG, "frame over 64 KiB")
            return
        node = self.node
        verdict = self.flood.check(now)
        if verdict != "ok":
            node.telemetry.rate_limited.inc()
            self._flooded(verdict)
            return
        encoding = self.encoding
        try:
            if frame_type is not self.frame_type:
                raise ProtocolError(
                    ErrorCode.BAD_ENCODING, f"frames must be {encoding.value} frames"
                )
            msg = decode(data, encoding)
            # Fast path: the vast majority of frames are positions without a ref.
            if msg.get("type") == "pos" and "ref" not in msg and "npc" not in msg:
                node.accept_position(parse_position(msg, self.npc_id, None))
                return
            kind, ref = message_type(msg, BOT_TYPES)
            claimed = msg.get("npc")
            if claimed is not None and claimed != self.npc_id:
                raise ProtocolError(ErrorCode.FORBIDDEN, "a bot speaks only for its own NPC", ref)
            self._dispatch(kind, ref, msg)
        except ProtocolError as err:
            self.send_message(err.to_message())
        except Exception:  # a bug, not the client's fault: keep the connection, log it
            log.exception("bot frame handler failed")

    def _dispatch(self, kind: str, ref: Any, msg: dict[str, Any]) -> None:
        node, npc = self.node, self.npc_id
        if kind == "pos":
            node.accept_position(parse_position(msg, npc, ref))
        elif kind == "ping":
            self.send_message(pong(ref))
        elif kind == "status":
            node.accept_status(npc, parse_status(msg, ref))
        elif kind == "metric":
            node.accept_metric(parse_metric(msg, npc, ref, now_ms()))
        elif kind == "event":
            name, data = parse_event(msg, ref)
            node.accept_event(npc, name, data, ref)
        elif kind == "ack":
            command_id = parse_ack(msg, ref)
            if self._sent_commands is not None and command_id in self._sent_commands:
                node.command_acked(npc, command_id)
            elif not COMMAND_ID_RE.fullmatch(command_id):
                raise ProtocolError(ErrorCode.FORBIDDEN, NOT_YOUR_COMMAND, ref)
            else:  # sent on an earlier connection, or not to this NPC: ask the record
                self._track(self.node.tasks.spawn(self._ack_checked(command_id, ref), "ack"))
        elif kind == "chunk":
            if not node.accept_chunk(parse_chunk(msg, ref), ref):
                raise ProtocolError(ErrorCode.UNAVAILABLE, "the world model is full", ref)
        elif kind == "blocks":
            node.accept_blocks(parse_blocks(msg, ref))
        elif kind in ("path", "mining_plan"):
            self._start_job(kind, ref, msg)
        elif kind == "auth":
            exp = self.deadline.refresh(node.settings.secret, parse_auth(msg, ref), ref)
            self.send_message(auth_ok(exp, ref))

    async def _ack_checked(self, command_id: str, ref: Any) -> None:
        commands = self.node.commands
        if await commands.recipient(command_id) == self.npc_id:
            await commands.acked(self.npc_id, command_id)
        else:
            self.send_message(error(ErrorCode.FORBIDDEN, NOT_YOUR_COMMAND, ref))

    def _track(self, job: asyncio.Task[Any]) -> None:
        if self._jobs is None:
            self._jobs = set()
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    def _start_job(self, kind: str, ref: Any, msg: dict[str, Any]) -> None:
        pool = self.node.worker_pool
        if pool is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "pathfinding is not available", ref)
        from gateway.workers import run_mining_plan, run_path

        owner = owner_key("npc", self.npc_id)
        answer = (
            run_path(pool, msg, owner, self.node.world)
            if kind == "path"
            else run_mining_plan(pool, msg, owner)
        )
        self._track(self.node.tasks.spawn(self._job(answer, ref), kind))

    async def _job(self, answer: Coroutine[Any, Any, dict[str, Any]], ref: Any) -> None:
        try:
            self.send_message(await answer)
        except ProtocolError as err:
            err.ref = ref if err.ref is None else err.ref
            self.send_message(err.to_message())

    def _close_once(self, code: int, why: str) -> None:
        if not self._closing:
            # Close once; the receive loop keeps draining (and dropping) input meanwhile,
            # so the socket is not reset with unread data and the close frame arrives.
            self._closing = True
            self.node.tasks.spawn(self.close(code, why), "close-bot")

    def _flooded(self, verdict: str) -> None:
        if verdict == "close":
            self._close_once(CloseCode.POLICY, "persistent flooding")
        elif verdict == "reject":
            self.send_message(RATE_LIMITED)


async def npc_endpoint(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    claims = request[CLAIMS]
    if node.state != "ok":
        raise web.HTTPServiceUnavailable(text="draining")
    try:
        await node.registry.ensure(claims.sub)
    except StoreUnavailable:
        # Registered as soon as the database is back, before anything it sends is written.
        log.warning("store unavailable: %s connects unregistered for now", claims.sub)
        node.registrations.add(claims.sub)
    session = BotSession(node, claims.sub, claims)
    session.transport = request.transport  # type: ignore[assignment]
    await session.ws.prepare(request)
    await session.run()
    await session.ws.linger(request)
    return session.ws
