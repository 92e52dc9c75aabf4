"""Typed aiohttp application keys for the replica's shared objects."""

from __future__ import annotations

from aiohttp import web

from gateway.auth import Claims
from gateway.config import Settings
from gateway.core.node import Node

SETTINGS = web.AppKey("settings", Settings)
NODE = web.AppKey("node", Node)
CLAIMS = web.RequestKey("claims", Claims)
