"""Evaluation metrics recorded at packaging and reused by retraining gates."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from nbmlops.errors import UsageError

CLASSIFICATION_METRICS = ("accuracy", "f1_macro", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
#: Metrics where a smaller value is better.
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})


def primary_metric(task: str, requested: str | None = None) -> str:
    """The metric that ranks versions: ``f1_macro`` or ``rmse`` unless ``requested`` is given."""
    allowed = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if requested is None:
        return allowed[0] if task == "regression" else "f1_macro"
    if requested not in allowed:
        raise UsageError(
            f"--metric {requested!r} is not a {task} metric; choose one of {', '.join(allowed)}"
        )
    return requested


def evaluate(outputs: pd.DataFrame, y_true, task: str, classes=None) -> dict[str, float]:
    """Score model ``outputs`` (from ``predict_frame``) against ``y_true``.

    ``classes`` are the labels in the order of the ``proba_`` columns.
    """
    y = np.asarray(y_true)
    predicted = outputs["prediction"].to_numpy()
    if task == "regression":
        predicted = predicted.astype(float)
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y, predicted))),
            "mae": float(skm.mean_absolute_error(y, predicted)),
            "r2": float(skm.r2_score(y, predicted)),
        }
    scores = {
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "f1_macro": float(skm.f1_score(y, predicted, average="macro")),
    }
    proba_cols = [c for c in outputs.columns if c.startswith("proba_")]
    if proba_cols and classes is not None and len(np.unique(y)) > 1:
        labels = list(classes)
        proba = outputs[proba_cols].to_numpy(dtype=float)
        if len(labels) == 2:
            scores["roc_auc"] = float(skm.roc_auc_score(y == labels[1], proba[:, 1]))
        else:
            scores["roc_auc"] = float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=labels))
        scores["log_loss"] = float(skm.log_loss(y, proba, labels=labels))
    return scores
