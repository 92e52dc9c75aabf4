"""`GET /metrics`: the live figures of `/api/performance` in Prometheus text format."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.api.system import performance_figures
from gateway.core.node import Node
from gateway.keys import NODE

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _flatten(prefix: str, value: Any, labels: dict[str, str]) -> Iterator[tuple[str, dict, float]]:
    """Numbers (and booleans) of a nested figures map as (series name, labels, value)."""
    if isinstance(value, bool | int | float):
        yield prefix, labels, float(value)
    elif isinstance(value, dict):
        for key, sub in value.items():
            yield from _flatten(f"{prefix}_{_snake(str(key))}", sub, labels)


# Breaker figures exported as series of their own, labelled by breaker (operations.md).
_BREAKER_GAUGES = {
    "failureCount": (
        "aicraft_breaker_failure_count",
        "Consecutive failures since the last success",
    ),
    "successRate": ("aicraft_breaker_success_rate", "Successes / completed calls, last window"),
}
_BREAKER_COUNTERS = {
    "totalCalls": ("aicraft_breaker_calls", "Completed calls through the breaker"),
    "successes": ("aicraft_breaker_successes", "Calls that succeeded"),
    "failures": ("aicraft_breaker_failures", "Calls that failed or timed out"),
    "rejected": ("aicraft_breaker_rejected", "Calls refused while OPEN"),
}
_STATES = ("CLOSED", "OPEN", "HALF_OPEN")


def breaker_families(replica: str, breakers: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """`aicraft_breaker_state{breaker, state}` (1 for the current state, 0 for the others) and
    the breakers' figures, one series per breaker."""
    labels = ["replica", "breaker"]
    state = GaugeMetricFamily(
        "aicraft_breaker_state",
        "1 for the breaker's current state (CLOSED, OPEN, HALF_OPEN), 0 for the others",
        labels=[*labels, "state"],
    )
    changed = GaugeMetricFamily(
        "aicraft_breaker_last_state_change_seconds",
        "Epoch seconds of the last transition (or of the start)",
        labels=labels,
    )
    gauges = {k: GaugeMetricFamily(n, h, labels=labels) for k, (n, h) in _BREAKER_GAUGES.items()}
    counters = {
        k: CounterMetricFamily(n, h, labels=labels) for k, (n, h) in _BREAKER_COUNTERS.items()
    }
    for name, figures in breakers.items():
        for s in _STATES:
            state.add_metric([replica, name, s], float(figures["state"] == s))
        changed.add_metric([replica, name], figures["lastStateChange"] / 1000.0)
        for key, family in (*gauges.items(), *counters.items()):
            family.add_metric([replica, name], float(figures[key]))
    yield state
    yield changed
    yield from gauges.values()
    yield from counters.values()


class FiguresCollector(Collector):
    """The figures of /api/performance as gauges, except those `exported` already has (the
    telemetry registry's counters): Prometheus rejects a family named twice."""

    def __init__(self, node: Node, exported: frozenset[str] = frozenset()) -> None:
        self._node = node
        self._exported = exported

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        figures = performance_figures(self._node)
        replica = figures.pop("replica")
        breakers = figures.pop("circuitBreakers")
        for name, labels, value in _flatten("aicraft", figures, {"replica": replica}):
            if name in self._exported:
                continue
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(
                    name, f"gateway figure {name}", labels=sorted(labels)
                )
            family.add_metric([labels[k] for k in sorted(labels)], value)
        yield from families.values()
        yield from breaker_families(replica, breakers)


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    registry = CollectorRegistry(auto_describe=False)
    telemetry = node.telemetry.registry  # histograms and counters
    registry.register(FiguresCollector(node, frozenset(f.name for f in telemetry.collect())))
    registry.register(telemetry)
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
