"""Tokens (§2)."""

from __future__ import annotations

import jwt
import pytest

from gateway.api.auth import required_roles
from gateway.auth import InvalidToken, Role, bearer_from, issue_token, verify_token

SECRET = "s" * 64


def test_round_trip() -> None:
    claims = verify_token(SECRET, issue_token(SECRET, "npc", "miner_1", 60))
    assert (claims.sub, claims.role) == ("miner_1", Role.NPC)


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "not.a.jwt",
        issue_token("other" * 10, "admin", "x"),
        issue_token(SECRET, "admin", "x", ttl_s=-1),
        jwt.encode({"sub": "x", "role": "root", "exp": 2**40}, SECRET, algorithm="HS256"),
        jwt.encode({"sub": "x", "role": "admin"}, SECRET, algorithm="HS256"),
        jwt.encode({"sub": "x", "role": "admin", "exp": 2**40}, SECRET, algorithm="HS512"),
    ],
)
def test_missing_malformed_expired_or_forged_tokens_are_refused(token: str | None) -> None:
    with pytest.raises(InvalidToken):
        verify_token(SECRET, token)


def test_header_wins_over_query() -> None:
    assert bearer_from("Bearer abc", "def") == "abc"
    assert bearer_from(None, "def") == "def"
    assert bearer_from("Basic abc", None) is None


def test_roles_per_route() -> None:
    assert required_roles("GET", "/api/health") is None
    assert required_roles("GET", "/api/npcs") == frozenset(Role)
    assert required_roles("POST", "/api/pathfind") == frozenset(Role)
    assert required_roles("POST", "/api/npcs") == {Role.ADMIN}
    assert required_roles("GET", "/ws/npc") == {Role.NPC}
    assert required_roles("GET", "/ws/viewer") == {Role.VIEWER, Role.ADMIN}
