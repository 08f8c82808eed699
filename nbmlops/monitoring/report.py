"""The monitor's report: status, alerts, per-feature drift, latency, quality, skipped log rows;
as JSON (``to_dict``), a frame, text and a static HTML page."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

from nbmlops.monitoring.drift import FeatureDrift, Thresholds

OK_STATUS, WARNING, ALERT = "ok", "warning", "alert"


@dataclass(frozen=True)
class MonitorThresholds:
    """Alert and warning limits; ``drift`` holds the per-feature test thresholds."""

    drift: Thresholds = field(default_factory=Thresholds)
    max_error_rate: float = 0.01
    max_p99_ms: float = 500.0
    max_quality_drop: float = 0.05
    max_staleness_days: float = 30.0
    min_predictions: int = 100
    min_feedback: int = 30

    def to_dict(self) -> dict:
        return {
            **{k: v for k, v in self.__dict__.items() if k != "drift"},
            "drift": self.drift.to_dict(),
        }


@dataclass(frozen=True)
class Alert:
    """A reason for the status: ``kind`` (drift, prediction_drift, error_rate, latency,
    quality, staleness, volume), the feature if any, and a sentence."""

    kind: str
    feature: str | None
    message: str
    level: str = ALERT

    def to_dict(self) -> dict:
        return {"kind": self.kind, "feature": self.feature, "message": self.message}


@dataclass(frozen=True)
class Skipped:
    """Log content the report could not use and left out: ``what`` (``inputs``, ``values`` of
    ``feature``, ``outputs``, ``latency``, ``feedback`` or ``proba``), how many, and why."""

    what: str
    count: int
    reason: str
    feature: str | None = None

    def to_dict(self) -> dict:
        return {
            "what": self.what,
            "feature": self.feature,
            "count": self.count,
            "reason": self.reason,
        }

    def __str__(self) -> str:
        one, many = _SKIPPED_NOUNS.get(self.what, (self.what, self.what))
        noun = (one if self.count == 1 else many).format(feature=self.feature)
        return f"{self.count:,} {noun} skipped: {self.reason}"


_SKIPPED_NOUNS = {
    "inputs": ("logged input", "logged inputs"),
    "values": ("value of {feature}", "values of {feature}"),
    "outputs": ("logged output", "logged outputs"),
    "latency": ("latency", "latencies"),
    "feedback": ("feedback label", "feedback labels"),
    "proba": ("labelled prediction", "labelled predictions"),
}


@dataclass(frozen=True)
class MonitorReport:
    """One look at a model's health; ``to_dict()`` is what ``nbmlops monitor --json`` prints."""

    model: str
    version: str
    status: str
    window_start: str | None
    window_end: str
    n_predictions: int
    features: tuple[FeatureDrift, ...]
    prediction_drift: FeatureDrift | None
    latency_ms: dict
    error_rate: float | None
    rejected_rate: float | None
    staleness_days: float
    trained_at: str
    quality: dict | None
    alerts: tuple[Alert, ...]
    warnings: tuple[Alert, ...]
    volume: tuple[tuple[str, int], ...] = ()
    thresholds: MonitorThresholds = field(default_factory=MonitorThresholds)
    skipped: tuple[Skipped, ...] = ()
    #: the versions that held ``production`` over the window, from the alias history:
    #: ``{"version", "from", "until"}`` (``until`` None: still production at the window's end)
    production_versions: tuple[dict, ...] = ()
    #: each route and version of the model seen over the window (primary, canary, shadow):
    #: see :func:`nbmlops.monitoring.routes.route_figures`
    routes: tuple[dict, ...] = ()
    #: the rollout events over the window that concern this version (as canary or primary):
    #: ``{"ts", "kind", "version", "primary_version", "reason"}``
    events: tuple[dict, ...] = ()
    #: the files this version scored over the window (``nbmlops predict``): the fields of
    #: :data:`nbmlops.predlog.records.BATCH_RUN_FIELDS`
    batch_runs: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "version": self.version,
            "status": self.status,
            "window": {"start": self.window_start, "end": self.window_end},
            "n_predictions": self.n_predictions,
            "features": [f.to_dict() for f in self.features],
            "prediction_drift": self.prediction_drift.to_dict() if self.prediction_drift else None,
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "rejected_rate": self.rejected_rate,
            "staleness_days": round(self.staleness_days, 3),
            "trained_at": self.trained_at,
            "quality": self.quality,
            "alerts": [a.to_dict() for a in self.alerts],
            "warnings": [w.to_dict() for w in self.warnings],
            "volume": [{"hour": h, "predictions": n} for h, n in self.volume],
            "thresholds": self.thresholds.to_dict(),
            "skipped": [s.to_dict() for s in self.skipped],
            "production_versions": [dict(p) for p in self.production_versions],
            "routes": [dict(r) for r in self.routes],
            "events": [dict(e) for e in self.events],
            "batch_runs": [dict(b) for b in self.batch_runs],
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per feature (drifted first), plus the prediction row; ``skipped`` counts the
        values of each that could not be read (the rest of what was skipped is in
        :attr:`skipped`)."""
        rows = [f.to_dict() for f in self.features]
        if self.prediction_drift is not None:
            rows.append({**self.prediction_drift.to_dict(), "name": "(prediction)"})
        frame = pd.DataFrame(rows)
        if frame.empty:
            return frame
        frame = frame.sort_values(["drifted", "significant", "psi"], ascending=False, kind="stable")
        return frame.set_index("name")

    def to_html(self) -> str:
        from nbmlops.monitoring.report_html import render_report

        return render_report(self)

    def _repr_html_(self) -> str:
        return self.to_html()

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        """``text/html`` (charts inline), ``image/png`` (the charts) and ``text/plain``; no
        script and no widget, so every notebook viewer shows it without a kernel."""
        from nbmlops.monitoring.report_html import render_bundle

        return render_bundle(self)

    def __repr__(self) -> str:
        reasons = [f"  {a.level}: {a.message}" for a in (*self.alerts, *self.warnings)]
        drifted = ", ".join(f.name for f in self.features if f.drifted) or "none"
        if any(f.drifted is None for f in self.features):
            drifted = "not judged (too few predictions)"
        lines = [
            f"{self.model} v{self.version}: {self.status.upper()} "
            f"({self.n_predictions} predictions, window {self.window_start or 'all'} .. "
            f"{self.window_end})",
            *reasons,
            f"  drifted features: {drifted}",
            f"  latency ms p50/p95/p99: {self.latency_ms.get('p50')}/"
            f"{self.latency_ms.get('p95')}/{self.latency_ms.get('p99')}",
            *(f"  {s}" for s in self.skipped),
        ]
        if self.production_versions:
            lines.append(f"  production over the window: {production_text(self)}")
        if any(r["route"] != "primary" for r in self.routes):
            lines += ["  routes:", *(f"    {route_text(r)}" for r in self.routes)]
        if self.events:
            lines += ["  events:", *(f"    {event_text(e)}" for e in self.events)]
        if self.batch_runs:
            lines += ["  batch runs:", *(f"    {batch_text(b)}" for b in self.batch_runs)]
        return "\n".join(lines)


def route_text(route: dict) -> str:
    """``shadow v4: 120 requests, errors 0.0%, p50/p99 3.1/9.8 ms, disagreement 4.2% (120)``"""
    latency = route["latency_ms"]
    errors = "-" if route["error_rate"] is None else f"{route['error_rate']:.1%}"
    text = (
        f"{route['route']} v{route['version']}: {route['requests']} requests, errors {errors}, "
        f"p50/p99 {latency['p50']}/{latency['p99']} ms"
    )
    shares = route.get("predictions") or {}
    if shares:
        text += ", predictions " + " ".join(f"{k}={v}" for k, v in shares.items())
    quality = route.get("quality")
    if quality:
        text += ", " + " ".join(f"{k} {v}" for k, v in quality.items())
    disagreement = route.get("disagreement")
    if disagreement is not None:
        rate = "-" if disagreement["rate"] is None else f"{disagreement['rate']:.1%}"
        text += f", disagreement with primary {rate} ({disagreement['compared']} compared)"
    return text


def event_text(event: dict) -> str:
    """``2026-12-02T10:00:00+00:00 rollback: canary v3 rolled back: error rate ...``"""
    when = datetime.fromtimestamp(event["ts"], UTC).isoformat(timespec="seconds")
    return f"{when} {event['kind']}: {event['reason']}"


def batch_text(run: dict) -> str:
    """``2026-12-07T15:00:00+00:00 scored 998 of 1,000 rows of /data/in.parquet (SHA-256
    3f2a...) -> /data/out.parquet, 2 rejected``"""
    when = datetime.fromtimestamp(run["ts"], UTC).isoformat(timespec="seconds")
    return (
        f"{when} scored {run['rows_scored']:,} of {run['rows_in']:,} rows of {run['input']} "
        f"(SHA-256 {run['input_sha256'][:12]}) -> {run['output']}, "
        f"{run['rows_rejected']:,} rejected ({run['engine']})"
    )


def production_text(report: MonitorReport) -> str:
    """``v3 (2026-12-02T09:00:00+00:00 .. 2026-12-02T10:00:00+00:00), v4 (2026-12-02T10:00:00+00:00
    .. now)``: each version that held production over the window, and when."""
    return ", ".join(
        f"v{p['version']} ({p['from']} .. {p['until'] or 'now'})"
        for p in report.production_versions
    )
