"""Bearer tokens (§2): HS256 JWTs with `sub`, `role` and `exp`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import jwt

ALGORITHM = "HS256"
DEFAULT_TTL_S = 24 * 3600


class Role(StrEnum):
    NPC = "npc"
    VIEWER = "viewer"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Claims:
    sub: str
    role: Role
    exp: int
    iat: int | None = None  # issued at (epoch s), when the token says


class InvalidToken(Exception):
    """Missing, malformed, expired or forged (HTTP 401)."""


def issue_token(secret: str, role: Role | str, sub: str, ttl_s: int = DEFAULT_TTL_S) -> str:
    now = int(time.time())
    payload = {"sub": sub, "role": Role(role).value, "iat": now, "exp": now + ttl_s}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str | None) -> Claims:
    """The token's claims, or :class:`InvalidToken` saying why not."""
    if not token:
        raise InvalidToken("missing bearer token")
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "role", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"invalid token: {exc}") from None
    sub, role = payload.get("sub"), payload.get("role")
    if type(sub) is not str or not sub or role not in Role.__members__.values():
        raise InvalidToken("invalid token: bad sub or role")
    iat = payload.get("iat")
    return Claims(
        sub=sub,
        role=Role(role),
        exp=int(payload["exp"]),
        iat=int(iat) if isinstance(iat, int | float) else None,
    )


def renewed_token(secret: str, claims: Claims) -> tuple[str, int]:
    """A fresh token for the same sub and role with the same lifetime (at most the default):
    a client that holds a valid token may keep it fresh, never make it longer-lived."""
    lifetime = claims.exp - claims.iat if claims.iat is not None else DEFAULT_TTL_S
    lifetime = min(max(lifetime, 1), DEFAULT_TTL_S)
    token = issue_token(secret, claims.role, claims.sub, lifetime)
    return token, verify_token(secret, token).exp


def bearer_from(authorization: str | None, query_token: str | None) -> str | None:
    """The token from `Authorization: Bearer T`, else from `?token=T`."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token or None


def owner_key(role: str, sub: str) -> str:
    """One client, for per-client limits: a bot over WebSocket and over REST alike."""
    return f"{role}:{sub}"
