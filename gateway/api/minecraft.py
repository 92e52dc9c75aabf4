"""POST /api/minecraft/command: run one command on the Minecraft server over RCON (docs/api.md)."""

from __future__ import annotations

import logging
import math

from aiohttp import web

from gateway.api.errors import ApiError, error_response, json_response, read_json
from gateway.breaker import CircuitOpen
from gateway.bridge import (
    MAX_COMMAND_BYTES,
    MINECRAFT_BRIDGE,
    RconAuthError,
    RconError,
    validate_command,
)

log = logging.getLogger(__name__)

PATH = "/api/minecraft/command"
MAX_BODY_BYTES = 16 * 1024  # a command is at most 1446 bytes; JSON escaping adds some


async def minecraft_command(request: web.Request) -> web.Response:
    """`{command}` → 200 `{"response": TEXT}`.

    400 bad_message (no JSON, `command` missing, not a string, empty, over 1446 bytes, NUL),
    501 not_configured (no GATEWAY_RCON_URL), 503 unavailable at once while the breaker is
    open, 504 timeout after the breaker's timeout (5 s), 502 bad_gateway for any other bridge
    failure (server unreachable, wrong RCON password, protocol error).
    """
    bridge = request.app.get(MINECRAFT_BRIDGE)
    if bridge is None:
        return error_response(
            501, "not_configured", "no Minecraft bridge: GATEWAY_RCON_URL is unset"
        )
    try:
        body = await read_json(request, MAX_BODY_BYTES)
    except ApiError as err:  # answered here too, so the handler does not rely on middleware
        return error_response(err.status, err.code, err.message)
    command = body.get("command") if isinstance(body, dict) else None
    if not isinstance(command, str):
        return error_response(400, "bad_message", "`command` must be a string")
    try:
        validate_command(command)
    except ValueError as exc:
        return error_response(400, "bad_message", f"{exc} (at most {MAX_COMMAND_BYTES} bytes)")

    try:
        text = await bridge.command(command)
    except CircuitOpen as exc:
        response = error_response(503, "unavailable", str(exc))
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return response
    except TimeoutError:
        seconds = bridge.breaker.config.timeout
        return error_response(504, "timeout", f"the Minecraft server did not answer in {seconds} s")
    except RconAuthError as exc:
        log.error("Minecraft bridge: %s", exc)  # needs an operator: the password is wrong
        return error_response(502, "bad_gateway", str(exc))
    except RconError as exc:
        log.warning("Minecraft bridge: %s", exc)
        return error_response(502, "bad_gateway", str(exc))
    return json_response({"response": text})


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, minecraft_command)
