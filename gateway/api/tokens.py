"""POST /api/token: a fresh token for the caller's own sub and role (§2).

The map page has only the token in its URL; before that token's `exp` it trades it here for a
new one of the same lifetime and sends that over its socket as `auth`. Other clients would
normally get tokens from their own provider (an identity service, `python -m gateway token`).
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.errors import json_response
from gateway.auth import renewed_token
from gateway.keys import CLAIMS, SETTINGS

PATH = "/api/token"


async def renew(request: web.Request) -> web.Response:
    token, exp = renewed_token(request.app[SETTINGS].secret, request[CLAIMS])
    return json_response({"token": token, "exp": exp})


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, renew)
