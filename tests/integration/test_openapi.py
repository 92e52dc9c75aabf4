"""docs/openapi.yaml: a valid OpenAPI document, complete for the app's routes, and true of a real
gateway (schemathesis against a live replica on a real port).

The gateway runs in a background thread with its own event loop (schemathesis calls it
synchronously through `requests`); it is seeded with NPCs, a profile, metric rows and one
connected bot, so that reads and commands meet real data, not only 404s and 409s.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import requests
import schemathesis
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from websockets.exceptions import ConnectionClosed

from gateway.app import create_app
from gateway.types import MetricRow
from tests.harness import (
    REPO,
    Peer,
    RunningGateway,
    gateway_settings,
    running_gateway,
    token,
)

SPEC = REPO / "docs" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
UNDOCUMENTED_PREFIXES = ("/ws/", "/static")

# Seeded before the run; the fuzzer's generated ids are swapped for one of them half the time.
SEEDED = ("builder_1", "miner_1", "miner_2", "scout_1")
BOT = "scout_1"  # connected for the whole run: `online=true` and commands have real targets
SCRATCH = "scratch_1"  # what DELETE removes; re-created before each DELETE

# Small and reproducible: ~25 generated cases per operation, the same ones every run.
# A gateway without GATEWAY_RCON_URL answers the Minecraft bridge with 501 not_configured, as
# the contract says: a documented answer there, not a server error.
CONFIG = schemathesis.Config.from_str(
    """
[generation]
max-examples = 25
deterministic = true
database = "none"

[[operations]]
include-operation-id = "minecraftCommand"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "501"]
"""
)
schema = schemathesis.openapi.from_path(SPEC, config=CONFIG)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _template(path: str) -> str:
    """A route path with its parameter names dropped: /api/npcs/{id} -> /api/npcs/{}."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def documented_operations() -> set[tuple[str, str]]:
    doc, _ = read_from_filename(str(SPEC))
    return {
        (method.upper(), _template(path))
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


def served_operations() -> set[tuple[str, str]]:
    app = create_app(gateway_settings(Path("/nonexistent-never-started")))
    served = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix", "")
        if route.method in ("HEAD", "*") or path.startswith(UNDOCUMENTED_PREFIXES):
            continue
        served.add((route.method, _template(path)))
    return served


# -- the document --------------------------------------------------------------------------------


def test_document_is_valid_openapi() -> None:
    doc, _ = read_from_filename(str(SPEC))
    validate(doc)


def test_every_route_is_documented() -> None:
    served = served_operations()
    assert served, "the app registered no routes"
    missing = served - documented_operations()
    assert not missing, f"routes the app serves but docs/openapi.yaml does not describe: {missing}"


def test_every_documented_operation_is_served() -> None:
    """The document describes nothing the gateway does not serve (no stale or invented paths)."""
    extra = documented_operations() - served_operations()
    assert not extra, f"described in docs/openapi.yaml but not served: {extra}"


def test_every_error_response_uses_the_error_schema() -> None:
    doc, _ = read_from_filename(str(SPEC))
    shared = doc["components"]["responses"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            for status, response in op["responses"].items():
                if int(status) < 400 or path == "/api/health":  # health's 503 is its own map
                    continue
                if "$ref" in response:
                    response = shared[response["$ref"].rsplit("/", 1)[1]]
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Error", (method, path, status)


# -- a live gateway ------------------------------------------------------------------------------


@dataclass
class LiveGateway:
    base_url: str
    headers: dict[str, str]
    command_ids: list[str] = field(default_factory=list)


async def _serve_bot(peer: Peer) -> None:
    """Read everything the gateway sends the bot and acknowledge its commands."""
    with contextlib.suppress(ConnectionClosed):
        async for raw in peer.ws:
            msg = orjson.loads(raw)
            if msg.get("type") == "command":
                await peer.send({"type": "ack", "id": msg["id"]})


async def _seed(gw: RunningGateway) -> asyncio.Task[None]:
    admin = {"Authorization": f"Bearer {token('admin', 'seed')}"}
    async with aiohttp.ClientSession(headers=admin) as http:
        for npc_id, role, status in (
            ("builder_1", "builder", "building"),
            ("miner_1", "miner", "idle"),
            ("miner_2", "miner", "mining"),
        ):
            body = {"id": npc_id, "name": npc_id.title(), "role": role, "status": status}
            async with http.post(f"{gw.http}/api/npcs", json=body) as resp:
                assert resp.status == 201, await resp.text()
        profile = {"skills": {"mining": 0.75}, "visits": [1, 2, 3]}
        async with http.put(f"{gw.http}/api/npcs/miner_1/profile", json=profile) as resp:
            assert resp.status == 200, await resp.text()
    bot = await gw.bot(BOT)
    await bot.send({"type": "pos", "x": 10.5, "y": 64, "z": -3.25, "yaw": 90, "pitch": 0})
    await bot.send({"type": "status", "status": "scouting"})
    await bot.roundtrip()
    await gw.node.store.insert_metrics(
        [
            MetricRow(npc, "ore_mined", float(i), 1_700_000_000_000 + i)
            for i, npc in enumerate(SEEDED)
        ]
    )
    await gw.node.registry.invalidate_metrics()
    return asyncio.get_running_loop().create_task(_serve_bot(bot))


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)],
)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    """One seeded gateway per backend for the whole run, on its own event loop in a thread."""
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("pg_server").create_database(
            f"openapi_{uuid.uuid4().hex[:12]}"
        )
    # Write limits far above what the run sends: 429 is documented, but it would mask the rest.
    settings = gateway_settings(
        tmp_path_factory.mktemp("openapi"),
        database_url=url,
        rest_write_per_s=5000.0,
        rest_write_burst=5000,
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway-loop", daemon=True)
    thread.start()

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)

    server = running_gateway(settings)
    try:
        gw: RunningGateway = run(server.__aenter__())
        try:
            bot_task = run(_seed(gw))
            yield LiveGateway(gw.http, {"Authorization": f"Bearer {token('admin', 'fuzz')}"})
            run(_stop(bot_task))
        finally:
            run(server.__aexit__(None, None, None))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def _coin(value: object) -> int:
    """A stable pseudo-random number for a generated value (the same on every run)."""
    return zlib.crc32(str(value).encode())


def _aim(case: schemathesis.Case, live: LiveGateway) -> None:
    """Point about half of the generated cases at real data instead of unknown ids."""
    params = case.path_parameters or {}
    if "id" in params and _coin(params["id"]) % 2 == 0:
        if case.method == "DELETE":
            params["id"] = SCRATCH
            requests.post(  # (re)created for it: 201, or 409 when it is still there
                f"{live.base_url}/api/npcs",
                json={"id": SCRATCH, "role": "scratch"},
                headers=live.headers,
                timeout=10,
            )
        elif case.operation.path.endswith("/commands"):
            params["id"] = BOT
        else:
            params["id"] = SEEDED[_coin(params["id"]) % len(SEEDED)]
    if "command_id" in params and live.command_ids and _coin(params["command_id"]) % 2 == 0:
        params["command_id"] = live.command_ids[-1]


# Third-party warnings only (pyproject turns warnings into errors): schemathesis' strategies
# trip Hypothesis' own deprecation notices. Warnings raised by gateway code still fail the run.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:schemathesis.*")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:hypothesis.*")
@schema.parametrize()
def test_gateway_conforms_to_its_document(case: schemathesis.Case, live: LiveGateway) -> None:
    """No 5xx, and every answer's status, content type and body are the documented ones."""
    _aim(case, live)
    response = case.call_and_validate(base_url=live.base_url, headers=live.headers, checks=CHECKS)
    if case.operation.path.endswith("/commands") and response.status_code == 202:
        live.command_ids.append(response.json()["id"])
