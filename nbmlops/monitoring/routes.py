"""Per-route figures of a model's prediction log: the primary, a canary and a shadow side by side.

Every logged prediction names its route (``primary``, ``canary``, ``shadow``) and the version
that made it; a shadow's prediction also names the primary's prediction of the same record
(``primary_id`` in its outputs), so the two can be compared record by record.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from nbmlops.predlog.log import PredictionLog
from nbmlops.predlog.records import ERROR, OK, REJECTED

PRIMARY, CANARY, SHADOW = "primary", "canary", "shadow"
_ORDER = {PRIMARY: 0, CANARY: 1, SHADOW: 2}


def route_figures(
    log: PredictionLog, model: str, since: float | None, until: float | None
) -> tuple[dict, ...]:
    """One entry per route and version of ``model`` seen in the log over ``[since, until)``,
    when a canary or a shadow is among them; none otherwise (the report's own figures are then
    the primary's, and the log is not read twice).

    Each has ``requests`` (logged records), ``error_rate`` (model failures; for a canary or a
    shadow also its refusals of input the primary accepted, which are logged only then),
    ``latency_ms`` (p50, p99), ``predictions`` (each class's share, or a regressor's mean and
    quartiles), ``quality`` on feedback (accuracy or MAE, with how many labels), and for a shadow
    ``disagreement``: the share of its predictions that differ from the primary's on the same
    records, with how many were compared.
    """
    if all(route == PRIMARY for route, _, _ in log.routes(model, since, until)):
        return ()
    rows = log.frame(model, since=since, until=until)
    rows["parsed"] = [_outputs(text) for text in rows["outputs"]]
    figures = []
    for (route, version), group in rows.groupby(["route", "version"], sort=False):
        figures.append(_figures(route, str(version), group, rows))
    figures.sort(key=lambda f: (_ORDER.get(f["route"], 9), f["version"]))
    return tuple(figures)


def _figures(route: str, version: str, group: pd.DataFrame, rows: pd.DataFrame) -> dict:
    status = group["status"]
    ok = group[status == OK]
    errors = int((status == ERROR).sum())
    rejected = int((status == REJECTED).sum())
    failures = errors + (rejected if route != PRIMARY else 0)
    judged = len(ok) + failures
    latency = pd.to_numeric(ok["latency_ms"], errors="coerce").dropna()
    figures = {
        "route": route,
        "version": version,
        "requests": len(group),
        "error_rate": failures / judged if judged else None,
        "latency_ms": {
            "p50": _round(latency.quantile(0.5)) if len(latency) else None,
            "p99": _round(latency.quantile(0.99)) if len(latency) else None,
        },
        "predictions": _distribution(ok["parsed"]),
        "quality": _quality(ok),
    }
    if route == SHADOW:
        figures["disagreement"] = _disagreement(ok, rows)
    return figures


def _outputs(text):
    if not isinstance(text, str):
        return None
    try:
        outputs = json.loads(text)
    except ValueError:
        return None
    return outputs if isinstance(outputs, dict) else None


def _values(outputs: pd.Series) -> pd.Series:
    return outputs.map(lambda o: o.get("prediction") if isinstance(o, dict) else None).dropna()


def _numeric(values: pd.Series) -> bool:
    return len(values) > 0 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    )


def _distribution(outputs: pd.Series) -> dict:
    values = _values(outputs)
    if not len(values):
        return {}
    if _numeric(values) and values.nunique() > 20:
        numbers = values.astype(float)
        return {
            "mean": _round(numbers.mean()),
            "p25": _round(numbers.quantile(0.25)),
            "p50": _round(numbers.quantile(0.5)),
            "p75": _round(numbers.quantile(0.75)),
        }
    shares = values.map(str).value_counts(normalize=True).sort_index()
    return {label: round(float(share), 4) for label, share in shares.items()}


def _quality(ok: pd.DataFrame) -> dict | None:
    labelled = ok[ok["feedback"].notna()]
    values = labelled["parsed"].map(lambda o: o.get("prediction") if o else None)
    if not len(labelled):
        return None
    if _numeric(values.dropna()) and values.dropna().nunique() > 20:
        truth = pd.to_numeric(labelled["feedback"], errors="coerce")
        error = (values.astype(float) - truth).abs().dropna()
        return {"mae": _round(error.mean()) if len(error) else None, "labels": len(error)}
    hits = [str(p) == str(t) for p, t in zip(values, labelled["feedback"], strict=True)]
    return {"accuracy": round(float(np.mean(hits)), 4), "labels": len(hits)}


def _disagreement(shadow_ok: pd.DataFrame, rows: pd.DataFrame) -> dict:
    """How often the shadow predicted otherwise than the primary on the same records."""
    primary = rows[(rows["route"] == PRIMARY) & (rows["status"] == OK)].set_index("id")
    primary_prediction = primary["parsed"].map(lambda o: o.get("prediction") if o else None)
    pairs = []
    for outputs in shadow_ok["parsed"]:
        link = outputs.get("primary_id") if outputs else None
        if link in primary_prediction.index:
            pairs.append((outputs.get("prediction"), primary_prediction[link]))
    if not pairs:
        return {"rate": None, "compared": 0}
    differ = [not _same(a, b) for a, b in pairs]
    return {"rate": round(float(np.mean(differ)), 4), "compared": len(pairs)}


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    return str(a) == str(b)


def _round(value) -> float | None:
    value = float(value)
    return round(value, 3) if np.isfinite(value) else None
