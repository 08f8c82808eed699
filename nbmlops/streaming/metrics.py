"""A consumer's Prometheus metrics, served on ``--metrics-port`` (127.0.0.1) when given."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

#: How often the group's lag is asked of the broker (XINFO GROUPS), at most.
LAG_EVERY = 1.0
_BATCH_SIZES = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class StreamMetrics:
    """Events by outcome, batch sizes and model time, and the group's lag and pending."""

    def __init__(self, port: int | None) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "nbmlops_stream_events",
            "Events handled, by outcome: scored, dead_letter",
            ["outcome"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "nbmlops_stream_duplicates_skipped",
            "Sink entries not written again for an event delivered twice",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "nbmlops_stream_batch_size",
            "Events per batch",
            buckets=_BATCH_SIZES,
            registry=self.registry,
        )
        self.model_seconds = Histogram(
            "nbmlops_stream_model_seconds", "Seconds in the model per batch", registry=self.registry
        )
        self.lag = Gauge(
            "nbmlops_stream_lag",
            "Events in the stream not yet delivered to the group (XINFO GROUPS lag)",
            registry=self.registry,
        )
        self.pending = Gauge(
            "nbmlops_stream_pending",
            "Events delivered to the group and not yet acknowledged",
            registry=self.registry,
        )
        self._lag_read = 0.0
        self._server = None
        if port is not None:
            self._server, _ = start_http_server(port, addr="127.0.0.1", registry=self.registry)

    def observe_batch(self, events: int, scored: int, dead: int, written: int, seconds: float):
        self.batch_size.observe(events)
        self.events.labels("scored").inc(scored)
        self.events.labels("dead_letter").inc(dead)
        self.duplicates.inc(scored - written)
        if scored:
            self.model_seconds.observe(seconds)

    def observe_lag(self, source) -> None:
        """Ask the broker for the group's lag, at most every :data:`LAG_EVERY` seconds."""
        now = time.monotonic()
        if now - self._lag_read < LAG_EVERY:
            return
        self._lag_read = now
        found = source.lag()
        for gauge, key in ((self.lag, "lag"), (self.pending, "pending")):
            if found.get(key) is not None:
                gauge.set(found[key])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
