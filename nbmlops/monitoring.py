"""``nbmlops.monitor``: is a served model healthy? Drift, latency, errors, staleness, quality.

Reads the prediction log of one version over a window and compares it with the version's
reference profile and packaged metrics. Status: ``alert`` when a threshold is breached,
``warning`` for what deserves a look but breaches nothing, else ``ok``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from nbmlops.config import Settings
from nbmlops.drift import FeatureDrift, Thresholds, detect_drift
from nbmlops.errors import UsageError
from nbmlops.evaluate import LOWER_IS_BETTER, evaluate
from nbmlops.model import load
from nbmlops.predlog import ERROR, REJECTED, PredictionLog, Window

OK_STATUS, WARNING, ALERT = "ok", "warning", "alert"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per feature (drifted first), plus the prediction row."""
        rows = [f.to_dict() for f in self.features]
        if self.prediction_drift is not None:
            rows.append({**self.prediction_drift.to_dict(), "name": "(prediction)"})
        frame = pd.DataFrame(rows)
        if frame.empty:
            return frame
        frame = frame.sort_values(["drifted", "significant", "psi"], ascending=False, kind="stable")
        return frame.set_index("name")

    def to_html(self) -> str:
        from nbmlops.report_html import render_report

        return render_report(self)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        reasons = [f"  {a.level}: {a.message}" for a in (*self.alerts, *self.warnings)]
        drifted = [f.name for f in self.features if f.drifted]
        lines = [
            f"{self.model} v{self.version}: {self.status.upper()} "
            f"({self.n_predictions} predictions, window {self.window_start or 'all'} .. "
            f"{self.window_end})",
            *reasons,
            f"  drifted features: {', '.join(drifted) or 'none'}",
            f"  latency ms p50/p95/p99: {self.latency_ms.get('p50')}/"
            f"{self.latency_ms.get('p95')}/{self.latency_ms.get('p99')}",
        ]
        return "\n".join(lines)


def parse_duration(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d`` (also ``s`` and ``w``) as a timedelta."""
    match = _DURATION.match(text.strip().lower()) if isinstance(text, str) else None
    if not match:
        raise UsageError(f"--window {text!r} is not a duration; use e.g. 30m, 24h or 7d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_time(text: str) -> datetime:
    """An ISO-8601 time; a time without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise UsageError(
            f"--since {text!r} is not an ISO-8601 time; use e.g. 2026-11-26T09:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def monitor(
    model: str,
    *,
    window: str | None = None,
    since: str | None = None,
    thresholds: MonitorThresholds | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> MonitorReport:
    """Report on ``model`` (an address) over ``window`` ending now and/or ``since`` a time;
    given both, the later start wins; given neither, everything logged for that version."""
    thresholds = thresholds or MonitorThresholds()
    settings = settings or Settings.from_env()
    now = now or datetime.now(UTC)
    start = _window_start(now, window, since)
    loaded = load(model, settings)
    name, version = loaded.metadata["name"], str(loaded.metadata["version"])
    log = PredictionLog(settings.home / "predictions.db")
    try:
        logged = log.window(
            name, version, since=start.timestamp() if start else None, until=now.timestamp() + 1
        )
    finally:
        log.close()
    return build_report(loaded, logged, thresholds, start, now)


def build_report(loaded, window: Window, thresholds: MonitorThresholds, start, now):
    """The report for the log ``window`` of the version ``loaded`` (see :func:`monitor`)."""
    scored, inputs, outputs = window.scored, window.inputs, window.outputs
    profile, schema = loaded.profile, loaded.schema
    features = detect_drift(list(profile.columns), inputs, thresholds.drift)
    prediction_ref = next((p for p in profile.predictions if p.name == "prediction"), None)
    prediction_drift = None
    if prediction_ref is not None:
        predicted = outputs["prediction"] if "prediction" in outputs else pd.Series(dtype=float)
        if schema.classes is not None:
            predicted = predicted.astype(str)
        prediction_drift = detect_drift(
            [prediction_ref], predicted.to_frame("prediction"), thresholds.drift
        )[0]
    features = tuple(
        sorted(features, key=lambda f: (not f.drifted, not f.significant, -(f.psi or 0)))
    )
    n = len(scored)
    errors, rejected = window.statuses.get(ERROR, 0), window.statuses.get(REJECTED, 0)
    total = sum(window.statuses.values())
    error_rate = errors / (n + errors) if n + errors else None
    rejected_rate = rejected / total if total else None
    latency = _latency(scored["latency_ms"])
    created = datetime.fromisoformat(loaded.lineage.created)
    staleness = (now - created).total_seconds() / 86400
    quality = _quality(loaded, scored, outputs)
    alerts, warnings = _reasons(
        features, prediction_drift, n, error_rate, latency, staleness, quality, thresholds
    )
    status = ALERT if alerts else WARNING if warnings else OK_STATUS
    return MonitorReport(
        model=loaded.metadata["name"],
        version=str(loaded.metadata["version"]),
        status=status,
        window_start=start.isoformat(timespec="seconds") if start else None,
        window_end=now.isoformat(timespec="seconds"),
        n_predictions=n,
        features=features,
        prediction_drift=prediction_drift,
        latency_ms=latency,
        error_rate=error_rate,
        rejected_rate=rejected_rate,
        staleness_days=staleness,
        trained_at=loaded.lineage.created,
        quality=quality,
        alerts=tuple(alerts),
        warnings=tuple(warnings),
        volume=_volume(scored["ts"]),
        thresholds=thresholds,
    )


def _window_start(now: datetime, window: str | None, since: str | None) -> datetime | None:
    starts = []
    if window:
        starts.append(now - parse_duration(window))
    if since:
        starts.append(parse_time(since))
    return max(starts) if starts else None


def _latency(values: pd.Series) -> dict:
    clean = values.dropna().to_numpy(dtype=float)
    if not len(clean):
        return {"p50": None, "p95": None, "p99": None}
    p50, p95, p99 = np.percentile(clean, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


def _quality(loaded, scored: pd.DataFrame, outputs: pd.DataFrame) -> dict | None:
    labelled = scored["feedback"].notna()
    if not labelled.any():
        return None
    labels = [json.loads(v) for v in scored.loc[labelled, "feedback"]]
    outs = outputs.loc[labelled]
    frame = pd.DataFrame({"prediction": outs["prediction"].to_numpy()})
    classes = loaded.schema.classes
    if classes is not None and "proba" in outs:
        for label in classes:
            frame[f"proba_{label}"] = [p.get(str(label)) for p in outs["proba"]]
    metrics = evaluate(frame, labels, loaded.schema.task, classes)
    primary = loaded.metadata["primary_metric"]
    packaged = loaded.lineage.metrics
    return {
        "n_labels": int(labelled.sum()),
        "metrics": {k: round(v, 6) for k, v in metrics.items()},
        "packaged": dict(packaged),
        "primary_metric": primary,
    }


def _reasons(features, prediction_drift, n, error_rate, latency, staleness, quality, t):
    alerts: list[Alert] = []
    warnings: list[Alert] = []
    if n < t.min_predictions:
        warnings.append(
            Alert(
                "volume",
                None,
                f"only {n} predictions in the window; drift "
                f"needs at least {t.min_predictions} to be judged",
                WARNING,
            )
        )
    for f in features:
        if f.drifted:
            alerts.append(Alert("drift", f.name, _drift_sentence(f)))
        elif f.significant and n >= t.min_predictions:
            warnings.append(
                Alert(
                    "drift",
                    f.name,
                    f"{f.name} changed significantly but by a "
                    f"small amount ({_effect(f)}): worth a look",
                    WARNING,
                )
            )
    if prediction_drift is not None and prediction_drift.drifted:
        alerts.append(
            Alert(
                "prediction_drift",
                None,
                "the prediction distribution shifted: " + _drift_sentence(prediction_drift),
            )
        )
    if error_rate is not None and error_rate > t.max_error_rate:
        alerts.append(
            Alert(
                "error_rate", None, f"error rate {error_rate:.2%} is above {t.max_error_rate:.2%}"
            )
        )
    if latency["p99"] is not None and latency["p99"] > t.max_p99_ms:
        alerts.append(
            Alert(
                "latency",
                None,
                f"p99 latency {latency['p99']:.1f} ms is above {t.max_p99_ms:.0f} ms",
            )
        )
    if staleness > t.max_staleness_days:
        warnings.append(
            Alert(
                "staleness",
                None,
                f"the model was trained {staleness:.0f} days "
                f"ago (limit {t.max_staleness_days:.0f})",
                WARNING,
            )
        )
    if quality is not None:
        _quality_reasons(quality, t, alerts, warnings)
    return alerts, warnings


def _quality_reasons(quality, t, alerts, warnings) -> None:
    primary = quality["primary_metric"]
    live, packaged = quality["metrics"].get(primary), quality["packaged"].get(primary)
    if quality["n_labels"] < t.min_feedback:
        warnings.append(
            Alert(
                "quality",
                None,
                f"only {quality['n_labels']} labels arrived "
                f"through /feedback; quality needs {t.min_feedback}",
                WARNING,
            )
        )
        return
    if live is None or packaged is None:
        return
    drop = (live - packaged) if primary in LOWER_IS_BETTER else (packaged - live)
    if drop > t.max_quality_drop:
        alerts.append(
            Alert(
                "quality",
                None,
                f"live {primary} is {live:.3f} on "
                f"{quality['n_labels']} labels against {packaged:.3f} at packaging "
                f"(worse by {drop:.3f}, limit {t.max_quality_drop})",
            )
        )


def _drift_sentence(f: FeatureDrift) -> str:
    return (
        f"{f.name} drifted ({f.test} {f.statistic:.3g}, corrected p={f.pvalue:.2g}, "
        f"PSI {f.psi:.2f})" + (f"; {f.note}" if f.note else "")
    )


def _effect(f: FeatureDrift) -> str:
    return f"effect {f.effect:.3f}" if f.effect is not None else "no effect measured"


def _volume(ts: pd.Series) -> tuple[tuple[str, int], ...]:
    if ts.empty:
        return ()
    hours = pd.to_datetime(ts, unit="s", utc=True).dt.floor("h")
    counts = hours.value_counts().sort_index()
    return tuple((h.isoformat(), int(c)) for h, c in counts.items())
