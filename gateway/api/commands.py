"""`POST /api/npcs/{id}/commands`: hand an operator's command to the bot, on any replica, or
queue it for up to 60 s while the bot is offline (§11)."""

from __future__ import annotations

from aiohttp import web
from redis.exceptions import RedisError

from gateway.api.errors import ApiError, json_map, json_response, read_json
from gateway.core.commands import NotReading, UnknownNpc
from gateway.keys import NODE
from gateway.protocol import COMMAND_ID_RE, NPC_ID_RE

MAX_ACTION = 64
MAX_COMMAND_BYTES = 16 * 1024


async def send_command(request: web.Request) -> web.Response:
    node = request.app[NODE]
    npc_id = request.match_info["npc_id"]
    if not NPC_ID_RE.fullmatch(npc_id):
        raise ApiError(404, "not_found", "no such NPC")
    body = await read_json(request, MAX_COMMAND_BYTES)
    if type(body) is not dict:
        raise ApiError(400, "bad_message", "body must be a JSON object {action, args?}")
    action, args = body.get("action"), body.get("args", {})
    if type(action) is not str or not 0 < len(action) <= MAX_ACTION:
        raise ApiError(400, "bad_message", f"action must be a string of 1-{MAX_ACTION}")
    if args is None:
        args = {}
    args = json_map(args, "args")
    try:
        command_id, delivered = await node.commands.send(npc_id, action, args)
    except UnknownNpc:
        raise ApiError(404, "not_found", f"no NPC {npc_id} is registered") from None
    except NotReading:
        raise ApiError(503, "busy", f"the bot for {npc_id} is not reading its messages") from None
    except (RedisError, OSError):
        raise ApiError(503, "unavailable", "the command queue is unreachable") from None
    return json_response({"id": command_id, "delivered": delivered, "queued": not delivered}, 202)


async def get_command(request: web.Request) -> web.Response:
    command_id = request.match_info["command_id"]
    if not COMMAND_ID_RE.fullmatch(command_id):  # also keeps ids out of other cache keys
        raise ApiError(404, "not_found", "no such command")
    record = await request.app[NODE].commands.lookup(command_id)
    if record is None:
        raise ApiError(404, "not_found", "no such command (records are kept 5 minutes)")
    return json_response(record)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/npcs/{npc_id}/commands", send_command)
    app.router.add_get("/api/commands/{command_id}", get_command)
