"""REST: POST /api/pathfind and POST /api/strategy/mining (§9; docs/api.md).

Both only compute (no stored state changes) and run on the worker pool. Errors are
``{"error": {"code", "message"}}``: 400 bad_message (a non-JSON body too), 503 busy/unavailable,
504 timeout, 500 for a worker that crashed.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api.errors import MAX_BODY_BYTES, ApiError, error_response, json_response, read_json
from gateway.auth import owner_key
from gateway.keys import CLAIMS, NODE
from gateway.protocol import ErrorCode, ProtocolError
from gateway.workers import WORKER_POOL
from gateway.workers.tasks import run_mining_plan, run_path
from gateway.world.model import WorldModel

_STATUS = {
    ErrorCode.BAD_MESSAGE: 400,
    ErrorCode.BAD_ENCODING: 400,
    ErrorCode.BUSY: 503,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.TIMEOUT: 504,
}
_FAILURE_STATUS = {"timeout": 504, "worker_crashed": 500, "internal": 500}


def _owner(request: web.Request) -> str | None:
    """Whose requests these are, for the pool's in-flight limit: the token's role and sub."""
    claims = request.get(CLAIMS)
    return None if claims is None else owner_key(claims.role.value, claims.sub)


async def _body(request: web.Request) -> dict[str, Any]:
    body = await read_json(request, MAX_BODY_BYTES)
    if type(body) is not dict:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "the body must be a JSON object")
    return body


def _world(request: web.Request) -> WorldModel | None:
    node = request.app.get(NODE)  # an app of pathfinding alone (tests) has no node
    return None if node is None else node.world


async def pathfind(request: web.Request) -> web.Response:
    """POST /api/pathfind: the `path` request without `type`; answers the `path_result` map.

    A search that ends without a path (no_path, too_large, timeout) is still a 200 answer with
    ``ok: false``: the request was fine, the world just has no such path within the limits.
    """
    try:
        result = await run_path(
            request.app[WORKER_POOL], await _body(request), _owner(request), world=_world(request)
        )
    except ProtocolError as exc:
        return error_response(_STATUS.get(exc.code, 400), exc.code.value, exc.message)
    except ApiError as exc:  # the body: not JSON, or over the limit (works without middleware)
        return error_response(exc.status, exc.code, exc.message)
    return json_response(result)


async def mining_strategy(request: web.Request) -> web.Response:
    """POST /api/strategy/mining → ``{"plan": [deposit with score…]}``, best first."""
    try:
        result = await run_mining_plan(
            request.app[WORKER_POOL], await _body(request), _owner(request)
        )
    except ProtocolError as exc:
        return error_response(_STATUS.get(exc.code, 400), exc.code.value, exc.message)
    except ApiError as exc:  # the body: not JSON, or over the limit (works without middleware)
        return error_response(exc.status, exc.code, exc.message)
    if not result["ok"]:
        error = result["error"]
        return error_response(_FAILURE_STATUS.get(error, 500), error, result["message"])
    return json_response({"plan": result["plan"]})
