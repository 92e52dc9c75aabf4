"""The contract's REST error shape: {"error": {"code": C, "message": M}} with a fitting status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.protocol import ProtocolError, check_json_map
from gateway.store import StoreUnavailable


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


RETRY_AFTER_S = 1  # what a 503 tells the client to wait (§5): outages here last seconds


def error_response(status: int, code: str, message: str) -> web.Response:
    response = json_response({"error": {"code": code, "message": message}}, status)
    if status in (429, 503):
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    503: "unavailable",
}

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err.status, err.code, err.message)
    except StoreUnavailable:
        return error_response(503, "unavailable", "the database is unavailable; try again")
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = _HTTP_CODES.get(exc.status, "error")
        return error_response(exc.status, code, exc.reason)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        # Still the contract's shape; the details go to the log, not to the caller.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; see the gateway log")


MAX_BODY_BYTES = 1 << 20  # the default REST body limit (1 MiB); handlers may set a lower one


async def read_body(request: web.Request, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The whole request body however the stream is segmented (Content-Length or chunked),
    or a 413 ApiError as soon as it is known to exceed `max_bytes`."""
    too_large = ApiError(413, "too_large", f"body over {max_bytes} bytes")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)


async def read_json(request: web.Request, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """The request body as JSON, or a 400/413 ApiError."""
    body = await read_body(request, max_bytes)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "bad_message", "body is not valid JSON") from None


def json_map(value: Any, what: str) -> dict[str, Any]:
    """`value` if it is a map JSON can carry (§5: ≤ 32 deep), else a 400 `bad_message`."""
    try:
        return check_json_map(value, what)
    except ProtocolError as err:
        raise ApiError(400, "bad_message", err.message) from None
