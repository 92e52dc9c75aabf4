"""Who may call what (§2), checked before any handler or WebSocket upgrade."""

from __future__ import annotations

import time
from collections import OrderedDict

from aiohttp import web

from gateway.api.errors import Handler, error_response
from gateway.auth import InvalidToken, Role, bearer_from, verify_token
from gateway.keys import CLAIMS, SETTINGS
from gateway.protocol import NPC_ID_RE
from gateway.ratelimit import TokenBucket

PUBLIC_PATHS = frozenset({"/api/health", "/metrics", "/api/openapi.yaml", "/"})
PUBLIC_PREFIXES = ("/static/",)
# Writes that change nothing: any valid token may call them (/api/token renews the caller's own).
READ_LIKE_POSTS = frozenset({"/api/pathfind", "/api/strategy/mining", "/api/token"})
WEBSOCKET_ROLES = {
    "/ws/npc": frozenset({Role.NPC}),
    "/ws/viewer": frozenset({Role.VIEWER, Role.ADMIN}),
}


def required_roles(method: str, path: str) -> frozenset[Role] | None:
    """Roles allowed for a request; None means no token is needed."""
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return None
    if path in WEBSOCKET_ROLES:
        return WEBSOCKET_ROLES[path]
    if method in ("GET", "HEAD", "OPTIONS") or path in READ_LIKE_POSTS:
        return frozenset(Role)
    return frozenset({Role.ADMIN})


def origin_allowed(allowed: tuple[str, ...] | None, origin: str | None) -> bool:
    """Browsers send `Origin` on every WebSocket upgrade; other clients need not. With a list
    configured, a browser page from elsewhere cannot ride on a user's token (§5)."""
    return allowed is None or origin is None or origin.rstrip("/") in allowed


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    roles = required_roles(request.method, request.path)
    if request.path in WEBSOCKET_ROLES and not origin_allowed(
        request.app[SETTINGS].allowed_origins, request.headers.get("Origin")
    ):
        return error_response(403, "forbidden", "this origin may not open a WebSocket here")
    if roles is None:
        return await handler(request)
    token = bearer_from(request.headers.get("Authorization"), request.query.get("token"))
    try:
        claims = verify_token(request.app[SETTINGS].secret, token)
    except InvalidToken as exc:
        response = error_response(401, "unauthorized", str(exc))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if claims.role not in roles:
        allowed = ", ".join(sorted(r.value for r in roles))
        return error_response(
            403, "forbidden", f"role {claims.role.value} may not; needs {allowed}"
        )
    if request.path == "/ws/npc" and not NPC_ID_RE.fullmatch(claims.sub):
        return error_response(403, "forbidden", "the token's sub is not a valid NPC id")
    if request.method not in ("GET", "HEAD", "OPTIONS") and request.path not in WEBSOCKET_ROLES:
        limiter = request.app[WRITE_LIMITER]
        if not limiter.allow(f"{claims.role.value}:{claims.sub}"):
            response = error_response(429, "rate_limited", "too many writes; slow down")
            response.headers["Retry-After"] = "1"
            return response
    request[CLAIMS] = claims
    return await handler(request)


class WriteLimiter:
    """REST writes per token: a token bucket per (role, sub), the least recent forgotten."""

    def __init__(self, rate_per_s: float, burst: int, max_tokens: int = 10_000) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._max = max_tokens

    def allow(self, who: str) -> bool:
        now = time.monotonic()
        bucket = self._buckets.get(who)
        if bucket is None:
            bucket = self._buckets[who] = TokenBucket(self._rate, self._burst, now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(who)
        return bucket.take(now)


WRITE_LIMITER = web.AppKey("write_limiter", WriteLimiter)
