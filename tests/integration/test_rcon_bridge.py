"""The Minecraft bridge and POST /api/minecraft/command against a real RCON server socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.minecraft import PATH, add_routes, minecraft_command
from gateway.breaker import BreakerConfig, BreakerStatus, CircuitBreaker, CircuitOpen
from gateway.bridge import (
    MAX_COMMAND_BYTES,
    MINECRAFT_BRIDGE,
    MinecraftBridge,
    RconAuthError,
    RconConnectionError,
)
from tests.rcon_server import RconTestServer, long_text

BridgeFactory = Callable[..., MinecraftBridge]


@pytest.fixture
async def rcon() -> AsyncIterator[RconTestServer]:
    async with RconTestServer() as server:
        yield server


@pytest.fixture
async def make_bridge() -> AsyncIterator[BridgeFactory]:
    made: list[MinecraftBridge] = []

    def factory(url: str, config: BreakerConfig | None = None) -> MinecraftBridge:
        bridge = MinecraftBridge(url, CircuitBreaker("MinecraftBridge", config))
        made.append(bridge)
        return bridge

    yield factory
    for bridge in made:
        await bridge.close()


async def poll_until(predicate: Callable[[], bool], deadline_s: float = 5.0) -> None:
    """Wait for `predicate` by polling, failing after `deadline_s` (never a bare sleep)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.01)


async def fail_n(bridge: MinecraftBridge, n: int) -> None:
    for _ in range(n):
        with pytest.raises(RconConnectionError):
            await bridge.command("echo x")


# --- the bridge -----------------------------------------------------------------------------


async def test_round_trip_over_one_persistent_connection(
    rcon: RconTestServer, make_bridge: BridgeFactory
) -> None:
    bridge = make_bridge(rcon.url())
    assert not bridge.connected  # opened lazily
    assert await bridge.command("echo hello world") == "hello world"
    assert await bridge.command("echo héllo ☃") == "héllo ☃"
    assert (await bridge.command("list")).startswith("Unknown or incomplete command")
    assert bridge.connected
    assert (rcon.connections, rcon.logins, rcon.dropped) == (1, 1, 0)
    assert bridge.breaker.stats()["totalCalls"] == 3


async def test_concurrent_commands_are_serialised(
    rcon: RconTestServer, make_bridge: BridgeFactory
) -> None:
    bridge = make_bridge(rcon.url())
    answers = await asyncio.gather(*(bridge.command(f"echo {i}") for i in range(20)))
    assert answers == [str(i) for i in range(20)]
    assert (rcon.connections, rcon.dropped) == (1, 0)


@pytest.mark.parametrize("size", [4096, 4097, 3 * 4096 + 123, 40_000])
async def test_long_response_is_reassembled(
    rcon: RconTestServer, make_bridge: BridgeFactory, size: int
) -> None:
    bridge = make_bridge(rcon.url())
    answer = await bridge.command(f"long {size}")
    assert answer == long_text(size)
    # The connection stays in step: the next command gets its own answer.
    assert await bridge.command("echo after") == "after"
    assert rcon.connections == 1


async def test_wrong_password_is_a_clear_error(
    rcon: RconTestServer, make_bridge: BridgeFactory
) -> None:
    bridge = make_bridge(rcon.url(password="wrong"))
    with pytest.raises(RconAuthError, match="refused the RCON password"):
        await bridge.command("echo x")
    assert not bridge.connected
    assert rcon.commands == []


@pytest.mark.parametrize("abort", [False, True], ids=["fin", "reset"])
async def test_reconnects_after_the_server_restarts(
    rcon: RconTestServer, make_bridge: BridgeFactory, abort: bool
) -> None:
    bridge = make_bridge(rcon.url())
    assert await bridge.command("echo one") == "one"
    await rcon.stop(abort=abort)
    await rcon.start()  # same port
    assert await bridge.command("echo two") == "two"
    assert rcon.connections == 2
    assert bridge.breaker.stats()["failures"] == 0


@pytest.mark.parametrize("abort", [False, True], ids=["fin", "reset"])
async def test_a_command_whose_connection_died_under_it_is_an_error_not_a_resend(
    rcon: RconTestServer, make_bridge: BridgeFactory, abort: bool
) -> None:
    bridge = make_bridge(rcon.url())
    assert await bridge.command("echo one") == "one"
    # The close lands while the next command is already written (the bridge has not run
    # since, so it still looks usable). Whether the server ran it cannot be known: it must
    # not be sent again (a `give` would run twice), so the caller gets an error.
    rcon.drop_connections(abort=abort)
    with pytest.raises(RconConnectionError, match="not sent again"):
        await bridge.command("give steve diamond 1")
    assert rcon.commands.count("give steve diamond 1") <= 1
    assert await bridge.command("echo two") == "two"  # the next one uses a fresh connection


async def test_a_command_the_server_ran_before_dying_is_never_run_twice(
    rcon: RconTestServer, make_bridge: BridgeFactory
) -> None:
    bridge = make_bridge(rcon.url())
    assert await bridge.command("echo warm") == "warm"  # a reused connection, as in production
    with pytest.raises(RconConnectionError):
        await bridge.command("crash")
    assert rcon.commands.count("crash") == 1
    assert await bridge.command("echo after") == "after"


async def test_an_idle_connection_the_server_closed_is_replaced_before_sending(
    rcon: RconTestServer, make_bridge: BridgeFactory
) -> None:
    bridge = make_bridge(rcon.url())
    assert await bridge.command("echo one") == "one"
    rcon.drop_connections()
    await poll_until(lambda: not rcon.sessions)  # the close reached the wire
    assert await bridge.command("echo two") == "two"
    assert rcon.commands == ["echo one", "echo two"]
    assert bridge.breaker.stats()["failures"] == 0


async def test_a_short_reply_needs_no_probe(
    rcon: RconTestServer, make_bridge: BridgeFactory
) -> None:
    # A server that ignores unknown packet types would never answer a probe: a reply that
    # cannot have been split (body under 4,096 bytes) must come back without one.
    rcon.answer_unknown = False
    bridge = make_bridge(rcon.url(), BreakerConfig(timeout=2.0))
    assert await bridge.command("echo quick") == "quick"
    assert await bridge.command(f"long {4095}") == long_text(4095)
    assert rcon.probes == 0


async def test_a_reply_that_may_be_split_is_probed(
    rcon: RconTestServer, make_bridge: BridgeFactory
) -> None:
    bridge = make_bridge(rcon.url())
    assert await bridge.command(f"long {4096}") == long_text(4096)  # exactly one fragment
    assert rcon.probes == 1


async def test_reconnects_after_a_failed_call_while_down(
    rcon: RconTestServer, make_bridge: BridgeFactory
) -> None:
    bridge = make_bridge(rcon.url())
    assert await bridge.command("echo one") == "one"
    await rcon.stop()
    await fail_n(bridge, 1)
    await rcon.start()
    assert await bridge.command("echo two") == "two"


async def test_timeout_drops_the_connection_and_counts_as_failure(
    rcon: RconTestServer, make_bridge: BridgeFactory
) -> None:
    bridge = make_bridge(rcon.url(), BreakerConfig(timeout=0.2))
    with pytest.raises(TimeoutError):
        await bridge.command("hang")
    assert bridge.breaker.stats()["failureCount"] == 1
    # The unanswered command must not leak into the next one: a fresh connection is used.
    assert await bridge.command("echo fine") == "fine"
    assert rcon.connections == 2


async def test_breaker_opens_after_five_failures_and_sixth_fails_fast(
    rcon: RconTestServer, make_bridge: BridgeFactory
) -> None:
    bridge = make_bridge(rcon.url())
    await rcon.stop()
    await fail_n(bridge, 5)
    assert bridge.breaker.state is BreakerStatus.OPEN

    started = time.perf_counter()
    with pytest.raises(CircuitOpen):
        await bridge.command("echo x")
    elapsed = time.perf_counter() - started
    assert elapsed < 0.050, f"the open breaker took {elapsed * 1000:.1f} ms to answer"
    assert bridge.breaker.stats()["rejected"] == 1


async def test_half_open_after_reset_then_closed_after_two_successes(
    rcon: RconTestServer, make_bridge: BridgeFactory
) -> None:
    bridge = make_bridge(rcon.url(), BreakerConfig(reset_timeout=0.3))
    await rcon.stop()
    await fail_n(bridge, 5)
    assert bridge.breaker.state is BreakerStatus.OPEN
    await rcon.start()

    await poll_until(lambda: bridge.breaker.state is BreakerStatus.HALF_OPEN)
    assert await bridge.command("echo a") == "a"
    assert bridge.breaker.state is BreakerStatus.HALF_OPEN
    assert await bridge.command("echo b") == "b"
    assert bridge.breaker.state is BreakerStatus.CLOSED
    transitions = [(t["from"], t["to"]) for t in bridge.breaker.stats()["transitions"]]
    assert transitions == [("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED")]


async def test_failed_trial_call_reopens(rcon: RconTestServer, make_bridge: BridgeFactory) -> None:
    bridge = make_bridge(rcon.url(), BreakerConfig(reset_timeout=0.3))
    await rcon.stop()
    await fail_n(bridge, 5)
    await poll_until(lambda: bridge.breaker.state is BreakerStatus.HALF_OPEN)
    await fail_n(bridge, 1)
    assert bridge.breaker.state is BreakerStatus.OPEN


async def test_closed_bridge_refuses_commands(
    rcon: RconTestServer, make_bridge: BridgeFactory
) -> None:
    bridge = make_bridge(rcon.url())
    assert await bridge.command("echo x") == "x"
    await bridge.close()
    assert not bridge.connected
    await poll_until(lambda: not rcon.sessions)
    with pytest.raises(RconConnectionError, match="closed"):
        await bridge.command("echo x")


# --- the REST handler -----------------------------------------------------------------------

Post = Callable[..., Awaitable[tuple[int, dict[str, Any]]]]
ApiFactory = Callable[[MinecraftBridge | None], Awaitable[Post]]


@pytest.fixture
async def api() -> AsyncIterator[ApiFactory]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(bridge: MinecraftBridge | None) -> Post:
        app = web.Application()
        app[MINECRAFT_BRIDGE] = bridge
        app.router.add_post(PATH, minecraft_command)
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)

        async def post(
            json: object = None, data: bytes | None = None
        ) -> tuple[int, dict[str, Any]]:
            kwargs = {"data": data} if data is not None else {"json": json}
            async with client.post(PATH, **kwargs) as resp:
                return resp.status, await resp.json()

        return post

    yield start
    for client in clients:
        await client.close()


async def test_api_200(rcon: RconTestServer, make_bridge: BridgeFactory, api: ApiFactory) -> None:
    post = await api(make_bridge(rcon.url()))
    assert await post({"command": "echo from rest"}) == (200, {"response": "from rest"})
    status, body = await post({"command": f"long {9000}"})
    assert status == 200 and body["response"] == long_text(9000)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"command": 5},
        {"command": None},
        {"command": ["say", "hi"]},
        {"command": ""},
        {"command": "x" * (MAX_COMMAND_BYTES + 1)},
        ["echo x"],
    ],
)
async def test_api_400_bad_message(
    rcon: RconTestServer,
    make_bridge: BridgeFactory,
    api: ApiFactory,
    payload: object,
) -> None:
    post = await api(make_bridge(rcon.url()))
    status, body = await post(payload)
    assert status == 400
    assert body["error"]["code"] == "bad_message"
    assert rcon.commands == []


async def test_api_400_not_json(
    rcon: RconTestServer, make_bridge: BridgeFactory, api: ApiFactory
) -> None:
    post = await api(make_bridge(rcon.url()))
    status, body = await post(data=b"{not json")
    assert status == 400 and body["error"]["code"] == "bad_message"


async def test_api_501_when_not_configured(api: ApiFactory) -> None:
    post = await api(None)
    status, body = await post({"command": "list"})
    assert status == 501 and body["error"]["code"] == "not_configured"


async def test_api_502_then_503_fast_when_the_server_is_down(
    rcon: RconTestServer,
    make_bridge: BridgeFactory,
    api: ApiFactory,
) -> None:
    post = await api(make_bridge(rcon.url()))
    await rcon.stop()
    for _ in range(5):
        status, body = await post({"command": "echo x"})
        assert status == 502 and body["error"]["code"] == "bad_gateway"

    started = time.perf_counter()
    status, body = await post({"command": "echo x"})
    elapsed = time.perf_counter() - started
    assert status == 503 and body["error"]["code"] == "unavailable"
    assert elapsed < 0.050, f"503 took {elapsed * 1000:.1f} ms"


async def test_api_503_while_breaker_is_open(
    rcon: RconTestServer, make_bridge: BridgeFactory
) -> None:
    bridge = make_bridge(rcon.url())
    for _ in range(5):
        bridge.breaker.record_failure()  # as the database/Redis code paths report outcomes
    app = web.Application()
    app[MINECRAFT_BRIDGE] = bridge
    add_routes(app)
    async with (
        TestClient(TestServer(app)) as client,
        client.post(PATH, json={"command": "echo x"}) as resp,
    ):
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "unavailable"
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert rcon.connections == 0  # refused without touching the server


async def test_api_504_on_timeout(
    rcon: RconTestServer, make_bridge: BridgeFactory, api: ApiFactory
) -> None:
    post = await api(make_bridge(rcon.url(), BreakerConfig(timeout=0.2)))
    status, body = await post({"command": "hang"})
    assert status == 504 and body["error"]["code"] == "timeout"


async def test_api_502_on_wrong_password(
    rcon: RconTestServer,
    make_bridge: BridgeFactory,
    api: ApiFactory,
) -> None:
    post = await api(make_bridge(rcon.url(password="nope")))
    status, body = await post({"command": "echo x"})
    assert status == 502
    assert "password" in body["error"]["message"]


async def test_half_open_sends_one_trial_command_at_a_time(
    rcon: RconTestServer, make_bridge: BridgeFactory
) -> None:
    bridge = make_bridge(rcon.url(), BreakerConfig(reset_timeout=0.3))
    await rcon.stop()
    await fail_n(bridge, 5)
    await rcon.start()
    await poll_until(lambda: bridge.breaker.state is BreakerStatus.HALF_OPEN)
    sent_before = len(rcon.commands)

    results = await asyncio.gather(
        *(bridge.command(f"echo {i}") for i in range(5)), return_exceptions=True
    )
    answered = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, CircuitOpen)]
    assert (len(answered), len(refused)) == (1, 4), results
    assert len(rcon.commands) - sent_before == 1  # only the trial reached the server
    assert bridge.breaker.state is BreakerStatus.HALF_OPEN
