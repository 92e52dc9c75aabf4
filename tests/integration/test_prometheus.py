"""`GET /metrics` as Prometheus reads it (prometheus-client's own parser): no series twice, every
circuit breaker with its state, and the Grafana dashboard in docs/ asks only for series that
exist."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.harness import REPO, Rest, free_port, gateway_settings, running_gateway, token

STATES = ("CLOSED", "OPEN", "HALF_OPEN")
DASHBOARD = REPO / "docs" / "grafana-dashboard.json"


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


async def _scrape(tmp_path: Path, opened: int = 0) -> tuple[str, dict]:
    """/metrics and /api/performance of a replica whose RCON bridge failed `opened` times."""
    # Nothing listens on this port: every bridge command fails at once (502).
    rcon = f"rcon://:pw@127.0.0.1:{free_port()}"
    async with running_gateway(gateway_settings(tmp_path, rcon_url=rcon)) as gw:
        admin = Rest(gw.http, token("admin", "ops"))
        try:
            for _ in range(opened):
                status, _ = await admin.call("POST", "/api/minecraft/command", {"command": "list"})
                assert status == 502
            status, text = await admin.call("GET", "/metrics")
            assert status == 200
            _, perf = await admin.call("GET", "/api/performance")
        finally:
            await admin.close()
    return text, perf


async def test_no_series_is_exported_twice(tmp_path: Path) -> None:
    text, _ = await _scrape(tmp_path)
    series = Counter((name, tuple(sorted(labels.items()))) for name, labels, _ in _samples(text))
    assert [s for s, n in series.items() if n > 1] == []
    families = Counter(f.name for f in text_string_to_metric_families(text))
    assert [f for f, n in families.items() if n > 1] == []


async def test_every_breaker_and_its_state(tmp_path: Path) -> None:
    text, perf = await _scrape(tmp_path, opened=5)  # five failures open the bridge's breaker
    breakers = perf["circuitBreakers"]
    assert breakers["MinecraftBridge"]["state"] == "OPEN"
    samples = _samples(text)
    labelled = {labels["breaker"] for _, labels, _ in samples if "breaker" in labels}
    assert labelled == set(breakers), "the breaker label holds breaker names, nothing else"
    for name, figures in breakers.items():
        state = {
            labels["state"]: value
            for metric, labels, value in samples
            if metric == "aicraft_breaker_state" and labels["breaker"] == name
        }
        assert state == {s: float(s == figures["state"]) for s in STATES}, name
        one = {
            metric: value
            for metric, labels, value in samples
            if labels.get("breaker") == name and metric != "aicraft_breaker_state"
        }
        assert one["aicraft_breaker_failure_count"] == figures["failureCount"]
        assert one["aicraft_breaker_success_rate"] == figures["successRate"]
        assert one["aicraft_breaker_failures_total"] == figures["failures"]
        assert one["aicraft_breaker_rejected_total"] == figures["rejected"]


def _dashboard_series(dashboard: dict) -> set[str]:
    """Every series name the dashboard's queries read (all of ours start with `aicraft_`)."""
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert exprs, "a dashboard without queries"
    exprs += [v["definition"] for v in dashboard.get("templating", {}).get("list", [])]
    names: set[str] = set()
    for expr in exprs:
        found = set(re.findall(r"\baicraft_[A-Za-z0-9_]*", expr))
        assert found, f"a query that reads none of the gateway's series: {expr}"
        names |= found
    return names


async def test_the_grafana_dashboard_names_only_exported_series(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    text, _ = await _scrape(tmp_path)
    exported = {name for name, _, _ in _samples(text)}
    wanted = _dashboard_series(dashboard)
    assert wanted, "no series found in the dashboard's queries"
    assert sorted(wanted - exported) == []
    assert any(name.startswith("aicraft_breaker_state") for name in wanted)


async def test_bus_bytes_in_both_views(tmp_path: Path) -> None:
    """`bus.published_bytes` / `received_bytes` in /api/performance and /metrics (scaling.md)."""
    text, perf = await _scrape(tmp_path)
    names = {name for name, _, _ in _samples(text)}
    for key in ("published_bytes", "received_bytes"):
        assert isinstance(perf["bus"][key], int)
        assert f"aicraft_bus_{key}" in names
