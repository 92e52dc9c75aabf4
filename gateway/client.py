"""Python SDK for bots and viewers (contract v1), on `websockets`.

Both clients keep one WebSocket open in a background task and reconnect by themselves with
jittered exponential backoff (capped). They stop for good on `close()`, when the server rejects
the token (HTTP 401/403), or when it closes with a code that means "stop": 4404 (the NPC was
deleted) and 4409 (replaced by a newer connection for the same NPC). `close_code` tells why.

`token` is a string or a *provider*: a callable (sync or async) returning a fresh token. With
a provider the client asks it for a token before every connect and again when a fifth of the
current token's lifetime is left, and refreshes the open connection in place (`auth`), so a
fleet runs for weeks without a restart (§2). A plain string expires with its `exp`:
the gateway closes the socket (4401) and the reconnect is refused (401), which stops the client.

Nothing is missed across a reconnect (§11): a `ViewerClient` resumes the event
stream from the last `{epoch, seq}` it got, so the events emitted while it was away arrive
(after a `recovered` message) before live ones; a `BotClient` hands each command id to
`on_command` once, however often a queued command reaches it.

    async with BotClient(url, token, on_command=handle) as bot:
        await bot.send_position(10, 64, -3)
        rtt = await bot.ping()

    async with ViewerClient(url, token) as viewer:
        await viewer.wait_for(lambda npcs: "bot-1" in npcs)
        print(viewer.npcs["bot-1"]["x"])
"""

# Timeouts are arguments (as in `wait_for(predicate, timeout)`) so tests and bots need no
# asyncio.timeout block around every call.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Self, TypeVar
from urllib.parse import quote

import jwt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from gateway.protocol import (
    Area,
    CloseCode,
    Encoding,
    ProtocolError,
    decode,
    encode,
    in_view,
    parse_subscribe,
)

log = logging.getLogger(__name__)

Message = dict[str, Any]
Handler = Callable[[Message], Awaitable[None] | None]
TokenProvider = Callable[[], str | Awaitable[str]]
T = TypeVar("T")

SEEN_COMMANDS_KEPT = 1024  # command ids a bot remembers, to handle each once
REFRESH_AT = 0.2  # refresh when this fraction of a token's remaining lifetime is left
REFRESH_RETRY_S = 5.0  # at most this long between attempts after a refresh failed

# Close codes after which reconnecting would only fight the server.
STOP_CODES = frozenset({CloseCode.DELETED, CloseCode.REPLACED})


class GatewayError(Exception):
    """The gateway answered a request with an `error` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NotConnected(ConnectionError):
    """A request that needs an answer was made while (or the link dropped while) disconnected."""


def token_exp(token: str) -> int | None:
    """The `exp` claim of a JWT, read without verifying it (the gateway verifies)."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.InvalidTokenError:
        return None
    return int(exp) if isinstance(exp, int | float) else None


def refresh_delay(exp: float, now: float) -> float:
    """Seconds from `now` until a token expiring at `exp` should be replaced."""
    return max(0.0, (exp - now) * (1 - REFRESH_AT))


def _encoding(value: str | Encoding) -> Encoding:
    if isinstance(value, Encoding):
        return value
    aliases = {"json": Encoding.JSON, "msgpack": Encoding.MSGPACK}
    return aliases.get(value) or Encoding(value)


class _Client:
    """The connection loop shared by bots and viewers; subclasses handle messages."""

    path = ""

    def __init__(
        self,
        url: str,
        token: str | TokenProvider,
        *,
        encoding: str | Encoding = "json",
        on_message: Handler | None = None,
        backoff_initial: float = 0.25,
        backoff_max: float = 10.0,
        open_timeout: float = 10.0,
    ) -> None:
        base = url.rstrip("/")
        # Accept either the server root or the full endpoint URL.
        self.url = base if base.endswith(self.path) else base + self.path
        self._provider: TokenProvider | None = None if isinstance(token, str) else token
        self.token = token if isinstance(token, str) else ""
        self.refreshes = 0  # tokens replaced in place (`auth_ok`)
        self.encoding = _encoding(encoding)
        self.on_message = on_message
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.open_timeout = open_timeout
        self.welcome: Message | None = None
        self.close_code: int | None = None  # of the last connection that closed
        self.close_reason: str = ""
        self.reconnects = 0  # successful connections after the first
        self.error: BaseException | None = None  # why the client stopped, if not close()
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()
        self._stopped = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._refs = itertools.count(1)
        self._pending: dict[Any, asyncio.Future[Message]] = {}

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self, timeout: float | None = 10.0) -> None:
        """Start the connection loop; wait up to `timeout` s for the first `welcome`.

        With `timeout=None` it returns at once and connects in the background. Raises
        `InvalidStatus` if the server rejects the token, `TimeoutError` if not connected in
        time (the client is closed then).
        """
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"aicraft-client {self.url}")
        if timeout is None:
            return
        try:
            await self.wait_connected(timeout)
        except BaseException:
            await self.close()
            raise

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until a connection is up (its `welcome` received); raises if the client stops."""
        async with asyncio.timeout(timeout):
            connected = asyncio.ensure_future(self._connected.wait())
            stopped = asyncio.ensure_future(self._stopped.wait())
            try:
                await asyncio.wait({connected, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                connected.cancel()
                stopped.cancel()
        if not self._connected.is_set():
            raise self.error or NotConnected(f"client stopped (close code {self.close_code})")

    async def wait_disconnected(self, timeout: float | None = None) -> None:
        """Wait until the current connection (if any) is lost."""
        async with asyncio.timeout(timeout):
            await self._disconnected.wait()

    async def wait_closed(self) -> int | None:
        """Wait until the client stops for good; returns the last close code."""
        await self._stopped.wait()
        return self.close_code

    async def close(self) -> None:
        """Close the connection (code 1000) and stop reconnecting."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._handlers):
            task.cancel()
        self._stopped.set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    # -- the connection loop ----------------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                try:
                    await self._connect_once()
                    attempt = 0  # the link was up: start the backoff over
                except InvalidStatus as exc:
                    status = exc.response.status_code
                    if status == 403 or (status == 401 and self._provider is None):
                        self.error = exc  # a bad token stays bad: retrying cannot help
                        return
                    # With a provider the next attempt asks it for a fresh token.
                    log.info("gateway refused the connection: %s", exc)
                except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
                    log.info("gateway connection failed: %r", exc)
                except Exception as exc:  # e.g. a malformed URL: retrying cannot help
                    log.exception("gateway client stopped")
                    self.error = exc
                    return
                if self._closing or self.close_code in STOP_CODES:
                    return
                # Equal jitter: never less than half the step, so a fleet spreads out.
                step = min(self.backoff_max, self.backoff_initial * 2**attempt)
                attempt += 1
                await asyncio.sleep(step / 2 + random.uniform(0, step / 2))
        finally:
            self._connected.clear()
            self._stopped.set()
            self._fail_pending(NotConnected("client stopped"))

    async def _fresh_token(self) -> str:
        """A token from the provider (or the fixed one)."""
        if self._provider is None:
            return self.token
        result = self._provider()
        token = await result if inspect.isawaitable(result) else result
        if not isinstance(token, str) or not token:
            raise ValueError("the token provider must return a non-empty string")
        return token

    async def _refresh_loop(self) -> None:
        """Replace the connection's token before it expires (only with a provider)."""
        while True:
            exp = token_exp(self.token)
            if exp is None:
                return
            await asyncio.sleep(refresh_delay(exp, time.time()))
            try:
                token = await self._fresh_token()
                new_exp = token_exp(token)
                if new_exp is None or new_exp <= exp:
                    raise ValueError("the provider returned no later token")
                await self.request({"type": "auth", "token": token})
            except NotConnected:
                return
            except Exception as exc:  # the provider or the gateway said no: try again soon
                log.warning("token refresh failed: %r", exc)
                await asyncio.sleep(min(REFRESH_RETRY_S, max(0.1, (exp - time.time()) / 4)))
                continue
            self.token = token
            self.refreshes += 1

    async def _connect_once(self) -> None:
        if self._provider is not None:
            self.token = await self._fresh_token()
        async with connect(
            self._connect_url(),
            additional_headers={"Authorization": f"Bearer {self.token}"},
            subprotocols=[Subprotocol(self.encoding.value)],
            compression=None,  # small frames: deflate costs CPU and memory on both ends
            proxy=None,
            open_timeout=self.open_timeout,
            max_size=64 * 1024 * 1024,  # snapshots of large fleets exceed websockets' 1 MiB
        ) as ws:
            welcome = self._decode(await ws.recv(decode=False))
            if welcome is None or welcome.get("type") != "welcome":
                raise InvalidHandshake(f"expected welcome, got {welcome!r}")
            first = self.welcome is None
            self.welcome = welcome
            self.close_code, self.close_reason = None, ""
            if not first:
                self.reconnects += 1
            self._ws = ws
            refresher: asyncio.Task[None] | None = None
            try:
                self._dispatch(welcome)
                await self._on_connect(ws)
                self._connected.set()
                self._disconnected.clear()
                if self._provider is not None:
                    refresher = asyncio.create_task(self._refresh_loop(), name="token-refresh")
                while True:
                    msg = self._decode(await ws.recv(decode=False))
                    if msg is not None:
                        self._dispatch(msg)
            except ConnectionClosed:
                pass
            finally:
                if refresher is not None:
                    refresher.cancel()
                    await asyncio.gather(refresher, return_exceptions=True)
                self._ws = None
                self._connected.clear()
                self._disconnected.set()
                self.close_code = ws.close_code
                self.close_reason = ws.close_reason or ""
                self._fail_pending(NotConnected(f"connection closed ({ws.close_code})"))

    def _connect_url(self) -> str:
        """The URL of the next connection (a viewer adds where to resume from)."""
        return self.url

    async def _on_connect(self, ws: ClientConnection) -> None:
        """Subclasses resend their state here, before the client counts as connected."""

    def _decode(self, data: bytes | str) -> Message | None:
        try:
            return decode(data, self.encoding)
        except ProtocolError as exc:
            log.warning("undecodable frame from the gateway: %s", exc.message)
            return None

    def _dispatch(self, msg: Message) -> None:
        kind = msg.get("type")
        ref = msg.get("ref")
        if ref is not None and kind in ("pong", "path_result", "auth_ok", "error"):
            future = self._pending.pop(ref, None)
            if future is not None and not future.done():
                if kind == "error":
                    future.set_exception(
                        GatewayError(str(msg.get("code")), str(msg.get("message")))
                    )
                else:
                    future.set_result(msg)
        try:
            self._handle(msg)
        except Exception:  # a malformed message must not end the connection loop
            log.exception("could not apply %s message", kind)
        if self.on_message is not None:
            self._call(self.on_message, msg)

    def _handle(self, msg: Message) -> None:
        """Subclasses apply a received message here."""

    def _call(self, handler: Callable[[Message], Any], msg: Message) -> None:
        """Run a user callback; an async one runs as a task so it never stalls the reader."""
        try:
            result = handler(msg)
        except Exception:
            log.exception("message handler failed")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._handlers.add(task)
            task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[Any]) -> None:
        self._handlers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("message handler failed", exc_info=task.exception())

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)

    # -- sending ----------------------------------------------------------------------------------
    async def send(self, msg: Message) -> bool:
        """Send one message now; False (never an exception) if there is no connection."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(encode(msg, self.encoding), text=self.encoding is Encoding.JSON)
        except ConnectionClosed:
            return False
        return True

    async def request(self, msg: Message, timeout: float = 10.0) -> Message:
        """Send `msg` with a fresh `ref` and wait for the reply carrying it.

        Raises `NotConnected` if disconnected (now or before the reply), `GatewayError` if the
        gateway answers with `error`, `TimeoutError` after `timeout` s.
        """
        if self._ws is None:
            raise NotConnected("not connected to the gateway")
        ref = next(self._refs)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        try:
            if not await self.send({**msg, "ref": ref}):
                raise NotConnected("not connected to the gateway")
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(ref, None)

    async def ping(self, timeout: float = 10.0) -> float:
        """Round trip of an application-level `ping` → `pong`, in seconds."""
        started = time.perf_counter()
        await self.request({"type": "ping"}, timeout)
        return time.perf_counter() - started


class BotClient(_Client):
    """One bot's link to `/ws/npc`.

    Sends never raise while disconnected: the latest position and status are kept and sent
    again after every reconnect; metrics and events sent while disconnected wait in a bounded
    queue (oldest dropped past `offline_queue`) and go out on reconnect. `command` messages go
    to `on_command` and are acknowledged on receipt unless `auto_ack=False` (then call `ack`).
    """

    path = "/ws/npc"

    def __init__(
        self,
        url: str,
        token: str | TokenProvider,
        *,
        encoding: str | Encoding = "json",
        on_command: Handler | None = None,
        on_message: Handler | None = None,
        auto_ack: bool = True,
        offline_queue: int = 256,
        **options: Any,
    ) -> None:
        super().__init__(url, token, encoding=encoding, on_message=on_message, **options)
        self.on_command = on_command
        self.auto_ack = auto_ack
        self.position: Message | None = None  # the latest `pos` message
        self.status: str | None = None
        self.commands_received = 0
        self.duplicate_commands = 0  # command ids seen before: acked again, not handled again
        # Recent command ids, oldest first: a queued command (§10) may reach the bot again
        # after a reconnect if its ack was lost; the handler must see it once.
        self._seen_commands: dict[Any, None] = {}
        self._offline: deque[Message] = deque(maxlen=offline_queue)

    async def _on_connect(self, ws: ClientConnection) -> None:
        resend: list[Message] = []
        if self.status is not None:
            resend.append({"type": "status", "status": self.status})
        if self.position is not None:
            resend.append(self.position)
        while self._offline:
            resend.append(self._offline.popleft())
        for msg in resend:
            await ws.send(encode(msg, self.encoding), text=self.encoding is Encoding.JSON)

    def _handle(self, msg: Message) -> None:
        if msg.get("type") != "command":
            return
        command_id = msg.get("id")
        duplicate = command_id is not None and command_id in self._seen_commands
        if duplicate:
            self.duplicate_commands += 1
        elif command_id is not None:
            self._seen_commands[command_id] = None
            if len(self._seen_commands) > SEEN_COMMANDS_KEPT:
                del self._seen_commands[next(iter(self._seen_commands))]
            self.commands_received += 1
        if self.auto_ack and "id" in msg:
            # Acked on receipt ("taken"): a long-running handler must not look like a loss.
            task = asyncio.ensure_future(self.ack(msg["id"]))
            self._handlers.add(task)
            task.add_done_callback(self._handler_done)
        if self.on_command is not None and not duplicate:
            self._call(self.on_command, msg)

    async def send_position(
        self,
        x: float,
        y: float,
        z: float,
        yaw: float | None = None,
        pitch: float | None = None,
        dim: str | None = None,
    ) -> bool:
        """Send a position (blocks; yaw/pitch in Minecraft degrees).

        Kept as the latest position even when disconnected, and resent after a reconnect.
        Returns whether it went out now.
        """
        msg: Message = {"type": "pos", "x": x, "y": y, "z": z}
        if yaw is not None:
            msg["yaw"] = yaw
        if pitch is not None:
            msg["pitch"] = pitch
        if dim is not None:
            msg["dim"] = dim
        self.position = msg
        return await self.send(msg)

    async def send_status(self, status: str) -> bool:
        """Send a status (`[a-z0-9_-]{1,32}`); kept and resent after a reconnect."""
        self.status = status
        return await self.send({"type": "status", "status": status})

    async def send_metric(self, name: str, value: float, ts: int | None = None) -> bool:
        """Queue a metric sample (ts in epoch ms, default: the gateway's clock)."""
        msg: Message = {"type": "metric", "name": name, "value": value}
        if ts is not None:
            msg["ts"] = ts
        return await self._send_or_queue(msg)

    async def send_event(self, name: str, data: Message | None = None) -> bool:
        """Publish an event to viewers (`task:*` names also become metrics)."""
        msg: Message = {"type": "event", "name": name}
        if data is not None:
            msg["data"] = data
        return await self._send_or_queue(msg)

    async def ack(self, command_id: str | int) -> bool:
        """Confirm a `command` was taken."""
        return await self.send({"type": "ack", "id": command_id})

    async def request_path(
        self,
        start: Sequence[int],
        goal: Sequence[int],
        world: Message,
        *,
        max_nodes: int | None = None,
        timeout_ms: int | None = None,
        timeout: float = 30.0,
    ) -> Message:
        """Ask the worker pool for a path; returns the `path_result` (check its `ok`).

        Raises `NotConnected` while disconnected and `GatewayError` (e.g. `busy`) on `error`.
        """
        msg: Message = {"type": "path", "start": list(start), "goal": list(goal), "world": world}
        if max_nodes is not None:
            msg["max_nodes"] = max_nodes
        if timeout_ms is not None:
            msg["timeout_ms"] = timeout_ms
        return await self.request(msg, timeout)

    async def _send_or_queue(self, msg: Message) -> bool:
        if await self.send(msg):
            return True
        self._offline.append(msg)
        return False


class ViewerClient(_Client):
    """One map viewer's link to `/ws/viewer`, with the merged live state in `npcs`.

    `npcs` maps NPC id → NPC map: each `snapshot` replaces it (one arrives after every
    (re)connect and every `subscribe`), `positions` and `status` update entries, `joined` /
    `left` set `online`. With an area or dimension subscribed, an NPC whose position update
    lies outside it has left (§11) and is removed from `npcs`. The subscription is
    sent again after a reconnect.
    """

    path = "/ws/viewer"

    def __init__(
        self,
        url: str,
        token: str | TokenProvider,
        *,
        encoding: str | Encoding = "json",
        on_message: Handler | None = None,
        queue_size: int = 10_000,
        **options: Any,
    ) -> None:
        super().__init__(url, token, encoding=encoding, on_message=on_message, **options)
        self.npcs: dict[str, Message] = {}
        self.frames = 0  # `positions` frames received
        self.updates = 0  # position updates applied
        self.dropped = 0  # messages an iterator did not take in time (its queue was full)
        self.queue_size = queue_size
        self._subscription: Message | None = None
        self._view: tuple[str | None, Area | None] | None = None  # (dim, area) subscribed
        self._queues: set[asyncio.Queue[Message]] = set()
        self._waiters: list[tuple[Callable[[Message | None], bool], asyncio.Future[Any]]] = []
        # Where the event stream was left (§11): every reconnect resumes from here.
        self.epoch: str | None = None
        self.seq: int | None = None
        self.recoveries = {"ok": 0, "failed": 0}

    def _since(self) -> dict[str, Any] | None:
        if self.epoch is None or self.seq is None:
            return None
        return {"epoch": self.epoch, "seq": self.seq}

    def _connect_url(self) -> str:
        since = self._since()
        if since is None or self._subscription is not None:
            return self.url  # a subscription resumes in its `subscribe`
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}since={quote(since['epoch'], safe='')}:{since['seq']}"

    async def _on_connect(self, ws: ClientConnection) -> None:
        if self._subscription is not None:
            msg = dict(self._subscription)
            since = self._since()
            if since is not None:
                msg["since"] = since
            await ws.send(encode(msg, self.encoding), text=self.encoding is Encoding.JSON)

    async def subscribe(self, dim: str | None = None, area: Sequence[float] | None = None) -> bool:
        """Receive only NPCs of `dim` inside `area` ([x0, z0, x1, z1]); no args: everything.

        A fresh `snapshot` follows. Kept and resent after a reconnect.
        """
        msg: Message = {"type": "subscribe"}
        if dim is not None:
            msg["dim"] = dim
        if area is not None:
            msg["area"] = list(area)
        self._subscription = msg if len(msg) > 1 else None
        self._view = parse_subscribe(msg, None) if self._subscription is not None else None
        return await self.send(msg)

    def _handle(self, msg: Message) -> None:
        kind = msg.get("type")
        if kind == "positions":
            self.frames += 1
            view = self._view
            for update in msg.get("updates") or ():
                self.updates += 1
                if view is not None and not in_view(update, *view):
                    # It left the subscribed area (§11): this is its last word until it is back.
                    self.npcs.pop(update["id"], None)
                    continue
                self.npcs.setdefault(update["id"], {"id": update["id"]}).update(update)
        elif kind == "snapshot":
            self.npcs = {npc["id"]: npc for npc in msg.get("npcs") or ()}
        elif kind == "status":
            self.npcs.setdefault(msg["id"], {"id": msg["id"]})["status"] = msg.get("status")
        elif kind in ("joined", "left"):
            self.npcs.setdefault(msg["id"], {"id": msg["id"]})["online"] = kind == "joined"
        elif kind == "event":
            epoch, seq = msg.get("epoch"), msg.get("seq")
            if isinstance(epoch, str) and isinstance(seq, int):
                self.epoch, self.seq = epoch, seq
        elif kind == "recovered":
            self.recoveries["ok" if msg.get("ok") else "failed"] += 1
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(msg)
        self._check_waiters(msg)

    # -- consuming --------------------------------------------------------------------------------
    async def messages(self) -> AsyncIterator[Message]:
        """Every message received from now on (a bounded queue per iterator: oldest dropped)."""
        queue: asyncio.Queue[Message] = asyncio.Queue(self.queue_size)
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self.messages()

    async def wait_for(
        self, predicate: Callable[[dict[str, Message]], bool], timeout: float = 10.0
    ) -> dict[str, Message]:
        """Wait until `predicate(npcs)` holds (checked now and after every message); → `npcs`."""
        await self._wait(lambda _msg: predicate(self.npcs), timeout)
        return self.npcs

    async def wait_for_message(
        self, predicate: Callable[[Message], bool], timeout: float = 10.0
    ) -> Message:
        """Wait for the next received message that satisfies `predicate`; → that message."""
        result: Message = await self._wait(
            lambda msg: msg is not None and predicate(msg), timeout, check_now=False
        )
        return result

    async def wait_for_npc(self, npc_id: str, timeout: float = 10.0, **fields: Any) -> Message:
        """Wait until `npcs[npc_id]` exists with these field values; → its map."""
        await self.wait_for(
            lambda npcs: (
                npc_id in npcs and all(npcs[npc_id].get(k) == v for k, v in fields.items())
            ),
            timeout,
        )
        return self.npcs[npc_id]

    async def _wait(
        self, test: Callable[[Message | None], bool], timeout: float, *, check_now: bool = True
    ) -> Any:
        if check_now and test(None):
            return None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = (test, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _check_waiters(self, msg: Message) -> None:
        for test, future in list(self._waiters):
            if future.done():
                continue
            try:
                if test(msg):
                    future.set_result(msg)
            except Exception as exc:  # a broken predicate fails its waiter, not the reader
                future.set_exception(exc)
