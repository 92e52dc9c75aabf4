"""`/ws/npc`: one connected bot — the position hot path, its other messages, its outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import WSMsgType, web

from gateway import PROTOCOL_VERSION
from gateway.auth import Claims
from gateway.direct_ws import DIRECT_DISPATCH, DirectWebSocketResponse, write_now
from gateway.keys import CLAIMS, NODE
from gateway.node import Node, now_ms
from gateway.protocol import (
    BOT_TYPES,
    CloseCode,
    Encoding,
    ErrorCode,
    ProtocolError,
    decode,
    encode,
    message_type,
    parse_ack,
    parse_auth,
    parse_event,
    parse_metric,
    parse_position,
    parse_status,
)
from gateway.ratelimit import FloodGuard
from gateway.sessions import RATE_LIMITED, WEBSOCKET_OPTIONS, encoding_of, expects
from gateway.store import StoreUnavailable
from gateway.token_deadline import TokenDeadline

log = logging.getLogger(__name__)

BOT_OUTBOX_MAX = 256


class BotSession:
    """One connected bot. Outgoing messages go through a bounded outbox and one writer task."""

    __slots__ = (
        "_closing",
        "_early",
        "_jobs",
        "_open",
        "_outbox",
        "_writer",
        "announce_left",
        "deadline",
        "encoding",
        "flood",
        "last_seen",
        "node",
        "npc_id",
        "opcode",
        "replaced",
        "ws",
    )

    def __init__(self, node: Node, npc_id: str, claims: Claims) -> None:
        self.node = node
        self.npc_id = npc_id
        self.deadline = TokenDeadline(claims, self._expired)  # armed once the session runs
        # Data frames arrive through `on_frame` from the parser itself (see direct_ws).
        self.ws: web.WebSocketResponse = (
            DirectWebSocketResponse(self.on_frame, **WEBSOCKET_OPTIONS)
            if DIRECT_DISPATCH
            else web.WebSocketResponse(**WEBSOCKET_OPTIONS)
        )
        self.encoding = Encoding.JSON
        self.opcode = WSMsgType.TEXT
        self._early: list[tuple[WSMsgType, bytes]] | None = []  # frames before `welcome`
        self.last_seen = time.monotonic()  # any frame or pong: the idle sweep reads it
        self.replaced = False  # closed for a newer connection (or deleted): no `left` from us
        self._closing = False
        self.announce_left = True  # False when the NPC was deleted: `left` went out already
        # Outgoing frames are written at once while the socket keeps up; they queue here (and
        # a writer task awaits the drain) only when it does not, or before `welcome` may go.
        self._outbox: list[bytes] = []  # rarely used, at most BOT_OUTBOX_MAX: a list is smaller
        self._open = False  # set once presence holds the bot: `welcome` may leave
        self._writer: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[Any]] | None = None  # path/mining requests in flight
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
        if self.ws.closed or len(self._outbox) >= BOT_OUTBOX_MAX:
            return False
        payload = encode(message, self.encoding)
        if self._open and not self._outbox and write_now(self.ws, payload, self.opcode):
            return True
        self._outbox.append(payload)
        if self._open:
            self._start_writer()
        return True

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = self.node.tasks.spawn(self._write_loop(), "bot-writer")

    async def close(self, code: int, message: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await asyncio.wait_for(self.ws.close(code=code, message=message.encode()), 2.0)

    # -- lifecycle ----------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        """Drain the outbox, awaiting the socket's drain; ends when the outbox is empty."""
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.CancelledError):
            while self._outbox and not self.ws.closed:
                await self.ws.send_frame(self._outbox.pop(0), self.opcode)

    async def run(self) -> None:
        node = self.node
        self.deadline.arm()
        self.encoding = encoding_of(self.ws)
        self.opcode = WSMsgType.TEXT if self.encoding is Encoding.JSON else WSMsgType.BINARY
        # `welcome` is queued before anything else can be (a command, an error).
        self.send_message(
            {
                "type": "welcome",
                "npc": self.npc_id,
                "replica": node.replica,
                "tick_ms": node.settings.tick_ms,
                "protocol": PROTOCOL_VERSION,
            }
        )
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
        self._open = True
        self._start_writer()
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
        canceller = getattr(node, "worker_pool", None)
        if canceller is not None:
            canceller.cancel_owner(self.npc_id)
        if node.hub.detach_bot(self) and not self.replaced:
            await node.presence.release(self.npc_id, node.replica)
            if self.announce_left:
                node.bot_left(self.npc_id)
        if self._writer is not None:
            self._writer.cancel()

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
            if len(self._early) < BOT_OUTBOX_MAX:  # a bot that floods before welcome loses some
                self._early.append((frame_type, data))
            return
        if self._closing:
            return  # drain what is in flight until the peer answers our close
        node = self.node
        verdict = self.flood.check(now)
        if verdict != "ok":
            node.telemetry.rate_limited.inc()
            self._flooded(verdict)
            return
        encoding = self.encoding
        try:
            if not expects(frame_type, encoding):
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

    def _dispatch(self, kind: str, ref: Any, msg: dict[str, Any]) -> None:
        node, npc = self.node, self.npc_id
        if kind == "pos":
            node.accept_position(parse_position(msg, npc, ref))
        elif kind == "ping":
            self.send_message({"type": "pong"} if ref is None else {"type": "pong", "ref": ref})
        elif kind == "status":
            node.accept_status(npc, parse_status(msg, ref))
        elif kind == "metric":
            node.accept_metric(parse_metric(msg, npc, ref, now_ms()))
        elif kind == "event":
            name, data = parse_event(msg, ref)
            node.accept_event(npc, name, data, ref)
        elif kind == "ack":
            node.command_acked(npc, parse_ack(msg, ref))
        elif kind in ("path", "mining_plan"):
            self._start_job(kind, ref, msg)
        elif kind == "auth":
            exp = self.deadline.refresh(node.settings.secret, parse_auth(msg, ref), ref)
            reply: dict[str, Any] = {"type": "auth_ok", "exp": exp}
            if ref is not None:
                reply["ref"] = ref
            self.send_message(reply)

    def _start_job(self, kind: str, ref: Any, msg: dict[str, Any]) -> None:
        pool = getattr(self.node, "worker_pool", None)
        if pool is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "pathfinding is not available", ref)
        from gateway.workers import run_mining_plan, run_path

        runner = run_path if kind == "path" else run_mining_plan
        job = self.node.tasks.spawn(self._job(runner, pool, ref, msg), kind)
        if self._jobs is None:
            self._jobs = set()
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _job(self, runner: Any, pool: Any, ref: Any, msg: dict[str, Any]) -> None:
        try:
            self.send_message(await runner(pool, msg, self.npc_id))
        except ProtocolError as err:
            err.ref = ref if err.ref is None else err.ref
            self.send_message(err.to_message())

    def _flooded(self, verdict: str) -> None:
        if verdict == "close":
            if not self._closing:
                # Close once; the receive loop keeps draining (and dropping) input meanwhile,
                # so the socket is not reset with unread data and the close frame arrives.
                self._closing = True
                self.node.tasks.spawn(
                    self.close(CloseCode.POLICY, "persistent flooding"), "close-flooder"
                )
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
    await session.ws.prepare(request)
    await session.run()
    return session.ws
