"""Prometheus metrics of one prediction server, in a registry of its own.

With several uvicorn workers (``PROMETHEUS_MULTIPROC_DIR`` set by the service), each worker
counts in files of that directory and ``/metrics`` adds up all the workers' counts, whichever
worker answers the scrape.
"""

from __future__ import annotations

import collections
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from nbmlops.artifact.profile import Profile
from nbmlops.artifact.schema import Schema

#: sklearn predictions are fast: sub-millisecond buckets matter.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class ServerMetrics:
    """Requests by endpoint and status, latencies, batch sizes, predictions by class or bucket."""

    def __init__(self, name: str, version: str, schema: Schema, profile: Profile) -> None:
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "nbmlops_requests_total",
            "HTTP requests by endpoint, status code, and the route and version that answered",
            ["endpoint", "status", "route", "version"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nbmlops_request_duration_seconds",
            "Time from request to response, by endpoint, route and version",
            ["endpoint", "route", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_latency = Histogram(
            "nbmlops_model_duration_seconds",
            "Time the model took per micro-batch (preprocessing + estimator)",
            ["route", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "nbmlops_batch_rows",
            "Rows per micro-batch",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.records = Counter(
            "nbmlops_records_total",
            "Records that passed validation",
            ["route", "version"],
            registry=self.registry,
        )
        self.route_failures = Counter(
            "nbmlops_route_failures_total",
            "Requests a canary or shadow failed (reason: model or rejected); a canary's are "
            "answered by the primary",
            ["route", "version", "reason"],
            registry=self.registry,
        )
        self.route_weight = Gauge(
            "nbmlops_route_weight",
            "Share of requests each route scores (the primary's is what the canary leaves)",
            ["route", "version"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.info = Gauge(
            "nbmlops_model_info",
            "The version this server answers with as primary (1); one it answered with before "
            "it followed its alias (0)",
            ["model", "version", "task"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.name, self.task = name, schema.task
        self.info.labels(model=name, version=version, task=schema.task).set(1)
        self.classification = schema.classes is not None
        if self.classification:
            self.predictions = Counter(
                "nbmlops_predictions_total",
                "Predictions by predicted class, route and version",
                ["label", "route", "version"],
                registry=self.registry,
            )
        else:
            edges = next((p.bin_edges for p in profile.predictions if p.name == "prediction"), None)
            buckets = tuple(sorted(set(edges or ()))) or (0.0,)
            self.prediction_values = Histogram(
                "nbmlops_prediction_value",
                "Predicted values, bucketed at the training predictions' quantiles",
                ["route", "version"],
                buckets=buckets,
                registry=self.registry,
            )

    def add_route(self, route: str, version: str, classes=None) -> None:
        """Show a route's series at 0 before its first request (each class, for a classifier)."""
        self.model_latency.labels(route=route, version=version)
        self.records.labels(route=route, version=version)
        if self.classification:
            for label in classes or ():
                self.predictions.labels(label=str(label), route=route, version=version)
        else:
            self.prediction_values.labels(route=route, version=version)

    def observe_request(
        self, endpoint: str, status: int, seconds: float, route: str, version: str
    ) -> None:
        self.requests.labels(
            endpoint=endpoint, status=str(status), route=route, version=version
        ).inc()
        self.latency.labels(endpoint=endpoint, route=route, version=version).observe(seconds)

    def route_failed(self, route: str, version: str, reason: str) -> None:
        self.route_failures.labels(route=route, version=version, reason=reason).inc()

    def set_weight(self, route: str, version: str, weight: float) -> None:
        self.route_weight.labels(route=route, version=version).set(weight)

    def answering(self, version: str, before: str) -> None:
        """``version`` replaced ``before`` as the primary."""
        self.info.labels(model=self.name, version=before, task=self.task).set(0)
        self.info.labels(model=self.name, version=version, task=self.task).set(1)

    def records_accepted(self, n: int, route: str, version: str) -> None:
        self.records.labels(route=route, version=version).inc(n)

    def observe_batch(self, seconds: float, predictions: list, route: str, version: str) -> None:
        """One micro-batch: its size, the model's time and its predictions (plain values)."""
        self.batch_rows.observe(len(predictions))
        self.model_latency.labels(route=route, version=version).observe(seconds)
        if self.classification:
            for label, count in collections.Counter(map(str, predictions)).items():
                self.predictions.labels(label=label, route=route, version=version).inc(count)
        else:
            values = self.prediction_values.labels(route=route, version=version)
            for value in predictions:
                if value is not None:
                    values.observe(value)

    def render(self) -> tuple[bytes, str]:
        registry = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
