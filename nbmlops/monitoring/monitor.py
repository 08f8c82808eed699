"""``nbmlops.monitor``: is a served model healthy? Drift, latency, errors, staleness, quality.

Reads the prediction log of one version over a window and compares it with the version's
reference profile and packaged metrics. Status: ``alert`` when a threshold is breached,
``warning`` for what deserves a look but breaches nothing, else ``ok``.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from nbmlops import jsoncodec
from nbmlops.artifact.labels import accepted, usable
from nbmlops.config import Settings
from nbmlops.errors import UsageError
from nbmlops.monitoring.drift import FeatureDrift, detect_drift
from nbmlops.monitoring.report import (
    ALERT,
    OK_STATUS,
    WARNING,
    Alert,
    MonitorReport,
    MonitorThresholds,
    Skipped,
)
from nbmlops.monitoring.routes import route_figures
from nbmlops.packaging.evaluate import LOWER_IS_BETTER, evaluate
from nbmlops.predlog.log import PredictionLog
from nbmlops.predlog.records import ERROR, REJECTED, Window
from nbmlops.registry.load import LoadedModel, load

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, option: str = "--window") -> timedelta:
    """``30m``, ``24h``, ``7d`` (also ``s`` and ``w``) as a timedelta; ``option`` names what
    gave it in the error."""
    match = _DURATION.match(text.strip().lower()) if isinstance(text, str) else None
    if not match:
        raise UsageError(f"{option} {text!r} is not a duration; use e.g. 30m, 24h or 7d")
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
    model: str | LoadedModel,
    *,
    window: str | None = None,
    since: str | None = None,
    thresholds: MonitorThresholds | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> MonitorReport:
    """Report on ``model`` (an address, or a model :func:`~nbmlops.load` returned, used as it
    is: a refreshing dashboard loads and verifies it once) over ``window`` ending now and/or
    ``since`` a time; given both, the later start wins; given neither, everything logged for
    that version."""
    thresholds = thresholds or MonitorThresholds()
    settings = settings or Settings.from_env()
    now = now or datetime.now(UTC)
    start = _window_start(now, window, since)
    loaded = model if isinstance(model, LoadedModel) else load(model, settings)
    name, version = loaded.metadata["name"], str(loaded.metadata["version"])
    since, until = (start.timestamp() if start else None), now.timestamp() + 1
    log = PredictionLog(settings.log_uri)
    try:
        logged = log.window(name, version, since=since, until=until)
        routes = route_figures(log, name, since=since, until=until)
        events = log.events(name, version, since=since, until=until)
        batch_runs = log.batch_runs(name, version, since=since, until=until)
    finally:
        log.close()
    report = build_report(loaded, logged, thresholds, start, now)
    # a model loaded from a folder may not be in this registry: it has no alias history here
    production = () if loaded.version is None else _production_versions(name, start, now, settings)
    report = replace(
        report, production_versions=production, routes=routes, batch_runs=tuple(batch_runs)
    )
    return _with_rollbacks(report, events)


def _with_rollbacks(report, events: list[dict]):
    """The report with its rollout events, and an alert ``rollback`` (the reason) for each
    rollback in the window: the canary's and the primary's report alike."""
    rollbacks = [Alert("rollback", None, e["reason"]) for e in events if e["kind"] == "rollback"]
    alerts = (*report.alerts, *rollbacks)
    status = ALERT if rollbacks else report.status
    return replace(report, events=tuple(events), alerts=alerts, status=status)


def _production_versions(name: str, start, now, settings: Settings) -> tuple[dict, ...]:
    """Who held ``production`` over the window, from the registry's alias history."""
    from nbmlops.registry.history import held, history
    from nbmlops.registry.registry import PRODUCTION, Registry

    return tuple(held(history(name, PRODUCTION, Registry(settings)), PRODUCTION, start, now))


def build_report(loaded, window: Window, thresholds: MonitorThresholds, start, now):
    """The report for the log ``window`` of the version ``loaded`` (see :func:`monitor`).

    What the log holds never makes it fail: a record, value or label it cannot use is left out
    of what needs it and counted in the report's ``skipped``.
    """
    scored, inputs, outputs = window.scored, window.inputs, window.outputs
    profile, schema = loaded.profile, loaded.schema
    n = len(scored)
    features = detect_drift(list(profile.columns), inputs, thresholds.drift)
    predicted = _predictions(schema, outputs)
    prediction_ref = next((p for p in profile.predictions if p.name == "prediction"), None)
    prediction_drift = None
    if prediction_ref is not None:
        # classes as the profile spells them: 1.0 (from a float column, say) is "1"
        shown = (
            predicted
            if schema.classes is None
            else predicted.map({c: str(c) for c in schema.classes})
        )
        prediction_drift = detect_drift(
            [prediction_ref], shown.to_frame("prediction"), thresholds.drift
        )[0]
    if n < thresholds.min_predictions:
        # too few predictions to judge drift: the statistics stay, the verdicts go
        features = [replace(f, drifted=None, significant=None) for f in features]
        if prediction_drift is not None:
            prediction_drift = replace(prediction_drift, drifted=None, significant=None)
    features = tuple(
        sorted(features, key=lambda f: (not f.drifted, not f.significant, -(f.psi or 0)))
    )
    errors, rejected = window.statuses.get(ERROR, 0), window.statuses.get(REJECTED, 0)
    total = sum(window.statuses.values())
    error_rate = errors / (n + errors) if n + errors else None
    rejected_rate = rejected / total if total else None
    latency = _latency(scored["latency_ms"])
    created = datetime.fromisoformat(loaded.lineage.created)
    staleness = (now - created).total_seconds() / 86400
    quality, left_out = _quality(loaded, scored, outputs, predicted)
    skipped = [
        *_skipped_records(window, features, n - len(predicted), schema),
        *left_out,
    ]
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
        skipped=tuple(skipped),
    )


def _predictions(schema, outputs: pd.DataFrame) -> pd.Series:
    """The logged predictions that are one of the classes (or, for a regressor, a finite
    number), indexed by the position of their record."""
    if "prediction" not in outputs:
        return pd.Series(dtype=object)
    predicted = outputs["prediction"]
    return predicted[usable(schema, predicted)]


_VALUE_REASONS = {
    "numeric": "not a number",
    "datetime": "not an ISO-8601 date-time",
}


def _skipped_records(window: Window, features, bad_outputs: int, schema) -> list[Skipped]:
    """What the drift and latency measures could not read."""
    found = []
    if window.skipped.get("inputs"):
        found.append(
            Skipped("inputs", window.skipped["inputs"], "not a JSON object; left out of drift")
        )
    for f in sorted((f for f in features if f.skipped), key=lambda f: f.name):
        reason = _VALUE_REASONS.get(f.kind, "an array or an object, not a category")
        found.append(Skipped("values", f.skipped, f"{reason}; left out of drift", f.name))
    if bad_outputs:
        found.append(
            Skipped(
                "outputs",
                bad_outputs,
                f"no prediction that is {accepted(schema)}; left out of prediction drift "
                "and quality",
            )
        )
    if window.skipped.get("latency"):
        found.append(
            Skipped(
                "latency",
                window.skipped["latency"],
                "not a finite number; left out of the latency percentiles",
            )
        )
    return found


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


def _quality(loaded, scored: pd.DataFrame, outputs: pd.DataFrame, predicted: pd.Series):
    """Live metrics on the feedback labels (None without any usable one), and what was left
    out: labels that are not one of the classes (or a finite number), and labelled records
    without usable probabilities. ``predicted``: the usable predictions (see
    :func:`_predictions`); a labelled record without one is counted with the outputs."""
    schema = loaded.schema
    texts = scored["feedback"].to_numpy(dtype=object)
    labelled = np.flatnonzero(pd.notna(texts))
    if not len(labelled):
        return None, []
    labels = _labels(texts[labelled])
    good = usable(schema, labels)
    skipped = []
    if not good.all():
        reason = f"not {accepted(schema)}; left out of quality"
        skipped.append(Skipped("feedback", int((~good).sum()), reason))
    chosen = np.flatnonzero(good & np.isin(labelled, predicted.index))
    if not len(chosen):
        return None, skipped
    rows, labels = labelled[chosen], [labels[i] for i in chosen]
    classes = schema.classes
    # lists: sklearn reads the dtype from the values (an object array would be "unknown")
    frame = pd.DataFrame({"prediction": predicted.loc[rows].tolist()})
    if classes is not None and "proba" in outputs:
        table = _probabilities(outputs["proba"].reindex(rows), [str(c) for c in classes])
        complete = np.isfinite(table).all(axis=1) & ((table >= 0) & (table <= 1)).all(axis=1)
        if not complete.all():
            reason = (
                "no probability between 0 and 1 for each class; their labels were left out "
                "of quality"
            )
            skipped.append(Skipped("proba", int((~complete).sum()), reason))
            frame, table = frame[complete].reset_index(drop=True), table[complete]
            labels = [label for label, keep in zip(labels, complete, strict=True) if keep]
        for i, label in enumerate(classes):
            frame[f"proba_{label}"] = table[:, i]
    if not labels:
        return None, skipped
    metrics = evaluate(frame, labels, schema.task, classes)
    primary = loaded.metadata["primary_metric"]
    packaged = loaded.lineage.metrics
    quality = {
        "n_labels": len(labels),
        "metrics": {k: round(v, 6) for k, v in metrics.items() if math.isfinite(v)},
        "packaged": dict(packaged),
        "primary_metric": primary,
    }
    return quality, skipped


#: A label whose logged text is not JSON: refused like any value that is not a label.
_UNREADABLE = object()


def _labels(texts: np.ndarray) -> list:
    """The JSON values of the label ``texts``, parsed in one go when they all are JSON."""
    try:
        values = jsoncodec.loads("[" + ",".join(texts) + "]")
    except (ValueError, TypeError):  # DecodeError is a ValueError
        values = None
    if isinstance(values, list) and len(values) == len(texts):
        return values
    return [_label(text) for text in texts]


def _label(text):
    try:
        return jsoncodec.loads(text)
    except (ValueError, TypeError):  # DecodeError is a ValueError
        return _UNREADABLE


def _probabilities(values: pd.Series, keys: list[str]) -> np.ndarray:
    """One row of class probabilities per logged ``proba`` object; NaN where one is not an
    object holding a number for each of ``keys``."""
    try:
        return np.array([[proba[k] for proba in values] for k in keys], dtype=float).T
    except (TypeError, KeyError, ValueError):  # something else than such objects: row by row
        pass
    table = np.full((len(values), len(keys)), np.nan)
    for i, proba in enumerate(values):
        if isinstance(proba, dict):
            row = [proba.get(k) for k in keys]
            if all(type(p) in (int, float) for p in row):
                table[i] = row
    return table


def _reasons(features, prediction_drift, n, error_rate, latency, staleness, quality, t):
    alerts: list[Alert] = []
    warnings: list[Alert] = []
    if n < t.min_predictions:
        warnings.append(
            Alert(
                "volume",
                None,
                f"only {n} predictions in the window; drift "
                f"needs at least {t.min_predictions} to be judged, so it was not",
                WARNING,
            )
        )
    # below min_predictions build_report left every drift verdict None: no drift reason
    for f in features:
        if f.drifted:
            alerts.append(Alert("drift", f.name, _drift_sentence(f)))
        elif f.significant:
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
    hours = pd.to_datetime(ts, unit="s", utc=True, errors="coerce").dt.floor("h")
    counts = hours.value_counts().sort_index()
    return tuple((h.isoformat(), int(c)) for h, c in counts.items())
