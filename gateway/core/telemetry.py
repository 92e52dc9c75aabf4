"""Prometheus histograms and counters of one replica (its own registry: replicas sharing a
process in tests never collide). The live figures of /api/performance are exported beside
them by `api.prometheus`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_FAST = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tick_seconds = self._histogram(
            "aicraft_tick_duration_seconds", "Time to cut and deliver one window", _FAST
        )
        self.broadcast_seconds = self._histogram(
            "aicraft_broadcast_duration_seconds",
            "Time to encode and hand one window to viewers",
            _FAST,
        )
        self.ingest_to_send_seconds = self._histogram(
            "aicraft_ingest_to_send_seconds",
            "From the oldest update of a window arriving to the window being handed to viewers",
            _LATENCY,
        )
        self.viewer_send_delay_seconds = self._histogram(
            "aicraft_viewer_send_delay_seconds",
            "From a frame being handed to a viewer to its send completing",
            _LATENCY,
        )
        self.viewer_frames_merged = self._counter(
            "aicraft_viewer_frames_merged",
            "Position frames merged into a slow viewer's pending one",
        )
        self.viewers_closed_slow = self._counter(
            "aicraft_viewers_closed_slow", "Viewers closed with 1008 for not keeping up"
        )
        self.rate_limited = self._counter(
            "aicraft_messages_rate_limited", "Bot messages dropped by flood control"
        )

    def _histogram(self, name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, doc, buckets=buckets, registry=self.registry)

    def _counter(self, name: str, doc: str) -> Counter:
        return Counter(name, doc, registry=self.registry)


def total(counter: Counter) -> float:
    """A counter's value so far, for the figures of /api/performance (read rarely)."""
    return next(s.value for s in counter.collect()[0].samples if s.name.endswith("_total"))
