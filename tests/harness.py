"""Run real gateways for the tests: in-process on a real port, or as a real subprocess.

`Peer` is a deliberately raw WebSocket client (the contract on the wire, nothing hidden), used
where a test is about frames, errors and close codes; flows use `gateway.client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import orjson
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.app import create_app, make_runner
from gateway.auth import issue_token
from gateway.bus import MemoryBroker
from gateway.config import Settings, env_flag
from gateway.core.node import Node
from gateway.keys import NODE
from gateway.testing import gateway_process
from gateway.testing.net import Listener
from gateway.testing.net import free_port as free_port  # re-exported: tests import it from here

SECRET = "test-secret-" + "x" * 20
REPO = Path(__file__).resolve().parents[1]


def gateway_settings(data_dir: Path, **overrides: Any) -> Settings:
    base = Settings(
        data_dir=data_dir,
        secret=SECRET,
        replica_id="r1",
        tick_ms=100,
        metrics_flush_ms=200,
        workers=1,
        viewer_stall_s=10.0,
        eager_workers=False,  # worker processes start only in tests that ask for a path
        # Tests send bursts; flood control is tested on its own with the real limits.
        rate_per_s=5000.0,
        rate_burst=5000,
        # CI runs the WebSocket tests again with 0 (make test-fallback): aiohttp's public paths.
        direct_dispatch=env_flag(os.environ, "GATEWAY_DIRECT_DISPATCH", True),
    )
    return dataclasses.replace(base, **overrides)


def token(role: str, sub: str, ttl_s: int = 3600) -> str:
    return issue_token(SECRET, role, sub, ttl_s)


class Peer:
    """A raw contract client: encodes what it sends, decodes what it gets."""

    def __init__(self, ws: ClientConnection, msgpack_encoding: bool) -> None:
        self.ws = ws
        self.msgpack = msgpack_encoding

    async def send(self, msg: Any) -> None:
        await self.ws.send(msgpack.packb(msg) if self.msgpack else orjson.dumps(msg).decode())

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        return msgpack.unpackb(data) if self.msgpack else orjson.loads(data)

    async def recv_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """The first message that satisfies `predicate` (others are skipped)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            msg = await self.recv(max(0.01, end - loop.time()))
            if predicate(msg):
                return msg

    async def recv_type(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        return await self.recv_until(lambda m: m.get("type") == kind, timeout)

    async def roundtrip(self) -> None:
        """Ping and wait for the pong: everything sent before has been processed."""
        ref = f"sync-{time.monotonic_ns()}"
        await self.send({"type": "ping", "ref": ref})
        await self.recv_until(lambda m: m.get("type") == "pong" and m.get("ref") == ref)

    async def closed_with(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes; the close code it sent."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()


@dataclasses.dataclass
class RunningGateway(Listener):
    app: web.Application
    runner: web.AppRunner
    port: int
    settings: Settings

    @property
    def node(self) -> Node:
        return self.app[NODE]

    async def peer(self, path: str, tok: str | None, *, encoding: str = "json", **kw: Any) -> Peer:
        protocols = [f"aicraft.v1.{encoding}"] if encoding else None
        headers = {"Authorization": f"Bearer {tok}"} if tok else None
        ws = await connect(
            self.ws + path,
            additional_headers=headers,
            subprotocols=protocols,  # type: ignore[arg-type]
            max_size=None,
            **kw,
        )
        return Peer(ws, encoding == "msgpack")

    async def bot(self, npc: str, encoding: str = "json") -> Peer:
        peer = await self.peer("/ws/npc", token("npc", npc), encoding=encoding)
        welcome = await peer.recv()
        assert welcome["type"] == "welcome" and welcome["npc"] == npc
        return peer

    async def viewer(self, encoding: str = "json") -> tuple[Peer, dict[str, Any]]:
        """A viewer past its welcome; returns it with its snapshot."""
        peer = await self.peer("/ws/viewer", token("viewer", "watcher"), encoding=encoding)
        assert (await peer.recv())["type"] == "welcome"
        snapshot = await peer.recv()
        assert snapshot["type"] == "snapshot"
        return peer, snapshot


@contextlib.asynccontextmanager
async def running_gateway(
    settings: Settings, broker: MemoryBroker | None = None
) -> AsyncIterator[RunningGateway]:
    app = create_app(settings, broker=broker)
    runner = make_runner(app, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield RunningGateway(app, runner, port, settings)
    finally:
        await runner.cleanup()


class Rest:
    """A small REST client with a token."""

    def __init__(self, base: str, tok: str | None) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        self.session = aiohttp.ClientSession()

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": self.headers}
        if body is not None:
            kwargs["data"] = body if isinstance(body, bytes | str) else orjson.dumps(body)
        async with self.session.request(method, self.base + path, **kwargs) as resp:
            raw = await resp.read()
            try:
                return resp.status, orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                return resp.status, raw.decode()

    async def close(self) -> None:
        await self.session.close()


class GatewayProcess(gateway_process.GatewayProcess):
    """`python -m gateway serve` as a real subprocess, from the checkout, with the tests' secret
    unless `env` has another."""

    def __init__(
        self,
        env: dict[str, str],
        port: int | None = None,
        *,
        command: list[str] | None = None,
        cwd: Path = REPO,
    ) -> None:
        super().__init__({"GATEWAY_SECRET": SECRET, **env}, port, command=command, cwd=cwd)
