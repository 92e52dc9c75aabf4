"""The NPC registry over REST: CRUD, learning profiles and metrics (docs/api.md)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson
from aiohttp import web

from gateway.api.errors import ApiError, json_map, json_response, read_json
from gateway.keys import NODE
from gateway.protocol import NPC_ID_RE, STATUS_RE, clean_text
from gateway.store import NpcExists

ROLE_RE = re.compile(r"[a-z0-9_-]{1,32}")
MAX_NAME = 64
MAX_PROFILE_BYTES = 64 * 1024
LIST_LIMIT_MAX, LIST_LIMIT_DEFAULT = 500, 100
METRICS_LIMIT_MAX, METRICS_LIMIT_DEFAULT = 1000, 100


# -- parameter checks ----------------------------------------------------------------------------


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_message", message)


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise _bad(f"{name} must be between {lo} and {hi}")
    return value


def _bool_param(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise _bad(f"{name} must be true or false")


def encode_cursor(npc_id: str) -> str:
    return base64.urlsafe_b64encode(npc_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        npc_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad("cursor is not one this API gave") from None
    if not NPC_ID_RE.fullmatch(npc_id):
        raise _bad("cursor is not one this API gave")
    return npc_id


def _filter(request: web.Request, name: str, max_len: int = 64) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not clean_text(raw, max_len):
        raise _bad(f"{name} must be 1-{max_len} characters without NUL")
    return raw


def _npc_id(request: web.Request) -> str:
    npc_id = request.match_info["npc_id"]
    if not NPC_ID_RE.fullmatch(npc_id):
        raise ApiError(404, "not_found", "no such NPC")
    return npc_id


def _checked_fields(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "name" in body:
        name = body["name"]
        if not clean_text(name, MAX_NAME):
            raise _bad(f"name must be a string of 1-{MAX_NAME} characters")
        out["name"] = name
    if "role" in body or creating:
        role = body.get("role")
        if type(role) is not str or not ROLE_RE.fullmatch(role):
            raise _bad("role must match [a-z0-9_-]{1,32}")
        out["role"] = role
    if "status" in body:
        status = body["status"]
        if type(status) is not str or not STATUS_RE.fullmatch(status):
            raise _bad("status must match [a-z0-9_-]{1,32}")
        out["status"] = status
    return out


async def _map_body(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if type(body) is not dict:
        raise _bad("body must be a JSON object")
    return body


# -- handlers ------------------------------------------------------------------------------------


async def list_npcs(request: web.Request) -> web.Response:
    registry = request.app[NODE].registry
    status, role = _filter(request, "status"), _filter(request, "role")
    limit = _int_param(request, "limit", LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX)
    cursor = request.query.get("cursor")
    after = decode_cursor(cursor) if cursor else None
    rows = await registry.list(
        status=status,
        role=role,
        online=_bool_param(request, "online"),
        after_id=after,
        limit=limit + 1,
    )
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1]["id"]) if len(rows) > limit else None
    return json_response({"npcs": page, "next_cursor": next_cursor})


async def create_npc(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await _map_body(request)
    npc_id = body.get("id")
    if type(npc_id) is not str or not NPC_ID_RE.fullmatch(npc_id):
        raise _bad("id must be 1-64 characters of [A-Za-z0-9_.-]")
    fields = _checked_fields(body, creating=True)
    try:
        npc = await node.registry.create(
            npc_id, fields.get("name", npc_id), fields["role"], fields.get("status", "unknown")
        )
    except NpcExists:
        raise ApiError(409, "conflict", f"NPC {npc_id} exists") from None
    return json_response(npc, 201)


async def get_npc(request: web.Request) -> web.Response:
    npc = await request.app[NODE].registry.get(_npc_id(request))
    if npc is None:
        raise ApiError(404, "not_found", "no such NPC")
    return json_response(npc)


async def patch_npc(request: web.Request) -> web.Response:
    node = request.app[NODE]
    npc_id = _npc_id(request)
    changes = _checked_fields(await _map_body(request), creating=False)
    if not changes:
        raise _bad("nothing to change: give name, role or status")
    npc = await node.registry.update(npc_id, changes)
    if npc is None:
        raise ApiError(404, "not_found", "no such NPC")
    if "status" in changes:
        node.status_changed(npc_id, changes["status"])
    return json_response(npc)


async def delete_npc(request: web.Request) -> web.Response:
    node = request.app[NODE]
    npc_id = _npc_id(request)
    if not await node.registry.delete(npc_id):
        raise ApiError(404, "not_found", "no such NPC")
    node.npc_deleted(npc_id)
    return web.Response(status=204)


async def get_profile(request: web.Request) -> web.Response:
    registry = request.app[NODE].registry
    npc_id = _npc_id(request)
    profile = await registry.get_profile(npc_id)
    if profile is None:
        if await registry.get(npc_id) is None:
            raise ApiError(404, "not_found", "no such NPC")
        profile = {}
    return json_response(profile)


async def put_profile(request: web.Request) -> web.Response:
    registry = request.app[NODE].registry
    npc_id = _npc_id(request)
    profile = json_map(await read_json(request, MAX_PROFILE_BYTES), "a profile")
    encoded = orjson.dumps(profile)
    if len(encoded) > MAX_PROFILE_BYTES:
        raise ApiError(413, "too_large", "a profile is at most 64 KiB")
    if b"\\u0000" in encoded:
        raise _bad("a profile cannot hold the NUL character")
    if await registry.get(npc_id) is None:
        raise ApiError(404, "not_found", "no such NPC")
    return json_response(await registry.put_profile(npc_id, profile))


async def list_metrics(request: web.Request) -> web.Response:
    registry = request.app[NODE].registry
    npc, name = _filter(request, "npc"), _filter(request, "name")
    since_raw = request.query.get("since")
    since = _int_param(request, "since", 0, 0, 2**62) if since_raw else None
    limit = _int_param(request, "limit", METRICS_LIMIT_DEFAULT, 1, METRICS_LIMIT_MAX)
    rows = await registry.metrics(npc=npc, name=name, since_ms=since, limit=limit)
    return json_response({"metrics": [r._asdict() for r in rows]})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/npcs", list_npcs)
    app.router.add_post("/api/npcs", create_npc)
    app.router.add_get("/api/npcs/{npc_id}", get_npc)
    app.router.add_patch("/api/npcs/{npc_id}", patch_npc)
    app.router.add_delete("/api/npcs/{npc_id}", delete_npc)
    app.router.add_get("/api/npcs/{npc_id}/profile", get_profile)
    app.router.add_put("/api/npcs/{npc_id}/profile", put_profile)
    app.router.add_get("/api/metrics", list_metrics)
