"""Tokens over time (§2): open sockets close at `exp` with 4401 unless refreshed
in place with `auth`. An in-process gateway on a real port, raw WebSocket clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from gateway.auth import issue_token
from tests.harness import SECRET, Peer, RunningGateway, gateway_settings, running_gateway, token

TOKEN_EXPIRED = 4401
SHORT_TTL_S = 2  # seconds; a token that expires while the test watches


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gateway_settings(tmp_path)) as gateway:
        yield gateway


def exp_of(tok: str) -> int:
    return int(jwt.decode(tok, options={"verify_signature": False})["exp"])


async def open_bot(gw: RunningGateway, npc: str, ttl_s: int) -> tuple[Peer, str]:
    tok = token("npc", npc, ttl_s)
    peer = await gw.peer("/ws/npc", tok)
    assert (await peer.recv())["type"] == "welcome"
    return peer, tok


async def open_viewer(gw: RunningGateway, ttl_s: int) -> tuple[Peer, str]:
    tok = token("viewer", "watcher", ttl_s)
    peer = await gw.peer("/ws/viewer", tok)
    assert (await peer.recv())["type"] == "welcome"
    assert (await peer.recv())["type"] == "snapshot"
    return peer, tok


async def test_bot_socket_closes_with_4401_at_exp(gw: RunningGateway) -> None:
    bot, tok = await open_bot(gw, "short", SHORT_TTL_S)
    assert await bot.closed_with(timeout=SHORT_TTL_S + 10) == TOKEN_EXPIRED
    assert time.time() >= exp_of(tok) - 0.05  # not before its time
    assert bot.ws.close_reason == "token expired"


async def test_viewer_socket_closes_with_4401_at_exp(gw: RunningGateway) -> None:
    viewer, _ = await open_viewer(gw, SHORT_TTL_S)
    assert await viewer.closed_with(timeout=SHORT_TTL_S + 10) == TOKEN_EXPIRED


@pytest.mark.parametrize("path", ["/ws/npc", "/ws/viewer"])
async def test_auth_refreshes_in_place_and_moves_the_deadline(
    gw: RunningGateway, path: str
) -> None:
    if path == "/ws/npc":
        peer, old = await open_bot(gw, "refresher", SHORT_TTL_S)
        fresh = token("npc", "refresher", 3600)
    else:
        peer, old = await open_viewer(gw, SHORT_TTL_S)
        fresh = token("viewer", "watcher", 3600)
    await peer.send({"type": "auth", "token": fresh, "ref": 7})
    reply = await peer.recv_type("auth_ok")
    assert reply == {"type": "auth_ok", "exp": exp_of(fresh), "ref": 7}
    # Past the old token's exp the socket still works (checked a few times a second: the
    # viewer's flood limit is 10 messages per second).
    while time.time() < exp_of(old) + 1:
        await peer.roundtrip()
        await asyncio.sleep(0.25)
    await peer.roundtrip()
    assert peer.ws.close_code is None


async def test_a_bad_refresh_is_unauthorized_and_changes_nothing(gw: RunningGateway) -> None:
    bot, _ = await open_bot(gw, "bad-refresh", SHORT_TTL_S + 1)
    later = 3600
    refusals = {
        "other sub": token("npc", "someone-else", later),
        "other role": token("viewer", "bad-refresh", later),
        "forged": issue_token("another-secret-" + "y" * 20, "npc", "bad-refresh", later),
        "expired": issue_token(SECRET, "npc", "bad-refresh", -10),
        "not later": token("npc", "bad-refresh", 1),
        "garbage": "not.a.token",
    }
    for i, (why, tok) in enumerate(refusals.items()):
        await bot.send({"type": "auth", "token": tok, "ref": i})
        reply = await bot.recv_type("error")
        assert (reply["code"], reply["ref"]) == ("unauthorized", i), why
    await bot.send({"type": "auth", "ref": "no-token"})
    reply = await bot.recv_type("error")
    assert (reply["code"], reply["ref"]) == ("bad_message", "no-token")
    # Nothing moved the deadline: the socket still closes at the first token's exp.
    assert await bot.closed_with(timeout=SHORT_TTL_S + 10) == TOKEN_EXPIRED


# -- POST /api/token: a page's way to a fresh token -----------------------------------------------


async def test_token_endpoint_renews_for_the_same_sub_role_and_lifetime(
    gw: RunningGateway,
) -> None:
    from tests.harness import Rest

    old = token("viewer", "page", 600)
    client = Rest(gw.http, old)
    try:
        status, body = await client.call("POST", "/api/token")
    finally:
        await client.close()
    assert status == 200, body
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["role"], claims["exp"]) == ("page", "viewer", body["exp"])
    assert body["exp"] >= exp_of(old)
    assert claims["exp"] - claims["iat"] == 600  # the same lifetime, not a longer one


async def test_token_endpoint_refuses_an_expired_token(gw: RunningGateway) -> None:
    from tests.harness import Rest

    client = Rest(gw.http, issue_token(SECRET, "viewer", "page", -5))
    try:
        status, body = await client.call("POST", "/api/token")
    finally:
        await client.close()
    assert status == 401 and body["error"]["code"] == "unauthorized"
