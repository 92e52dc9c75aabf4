"""Tokens over time on open sockets (§2).

A connection lives only as long as its token: at `exp` it is closed with 4401 unless the client
sent `auth` with a token for the same `sub` and `role` and a later `exp`, which moves the
deadline. `refreshed_claims` is the pure rule; `TokenDeadline` adds the loop timer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.auth import Claims, InvalidToken, verify_token
from gateway.protocol import ErrorCode, ProtocolError


def refreshed_claims(secret: str, current: Claims, token: str, ref: object = None) -> Claims:
    """The claims of a refresh token, or ProtocolError `unauthorized` saying why not."""
    try:
        claims = verify_token(secret, token)
    except InvalidToken as exc:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, str(exc), ref) from None
    if claims.sub != current.sub or claims.role is not current.role:
        raise ProtocolError(
            ErrorCode.UNAUTHORIZED, "a refresh token must have the same sub and role", ref
        )
    if claims.exp <= current.exp:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "a refresh token must expire later", ref)
    return claims


class TokenDeadline:
    """Calls `on_expiry` once, at the current token's `exp` (wall clock, epoch seconds)."""

    __slots__ = ("_handle", "_on_expiry", "claims")

    def __init__(self, claims: Claims, on_expiry: Callable[[], None]) -> None:
        self.claims = claims
        self._on_expiry = on_expiry
        self._handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        self.cancel()
        delay = max(0.0, self.claims.exp - time.time())
        self._handle = asyncio.get_running_loop().call_later(delay, self._on_expiry)

    def refresh(self, secret: str, token: str, ref: object = None) -> int:
        """Accept a refresh token and move the deadline; its `exp`. Raises ProtocolError."""
        self.claims = refreshed_claims(secret, self.claims, token, ref)
        if self._handle is not None:
            self.arm()
        return self.claims.exp

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
