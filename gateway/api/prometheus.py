"""`GET /metrics`: the live figures of `/api/performance` in Prometheus text format."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.api.system import performance_figures
from gateway.keys import NODE
from gateway.node import Node

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _flatten(prefix: str, value: Any, labels: dict[str, str]) -> Iterator[tuple[str, dict, float]]:
    if isinstance(value, bool):
        yield prefix, labels, float(value)
    elif isinstance(value, int | float):
        yield prefix, labels, float(value)
    elif isinstance(value, dict):
        for key, sub in value.items():
            if prefix.endswith("circuit_breakers"):
                yield from _flatten(prefix, sub, {**labels, "breaker": key})
            elif key == "state" and isinstance(sub, str):
                for state in ("CLOSED", "OPEN", "HALF_OPEN"):
                    yield f"{prefix}_state", {**labels, "state": state}, float(sub == state)
            else:
                yield from _flatten(f"{prefix}_{_snake(str(key))}", sub, labels)


class FiguresCollector(Collector):
    def __init__(self, node: Node) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        figures = performance_figures(self._node)
        replica = figures.pop("replica")
        for name, labels, value in _flatten("aicraft", figures, {"replica": replica}):
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(
                    name, f"gateway figure {name}", labels=sorted(labels)
                )
            family.add_metric([labels[k] for k in sorted(labels)], value)
        yield from families.values()


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FiguresCollector(node))
    registry.register(node.telemetry.registry)  # histograms and counters
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
