"""``nbmlops.package``: a fitted model and its preprocessing become a verified, registered version.

Order matters: everything is built and checked (capture, artifact, fresh-process parity) before
the registry is touched, so a failure at any step registers nothing.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from nbmlops.artifact.card import Card
from nbmlops.artifact.files import (
    ArtifactContents,
    manifest_digest,
    save_estimator,
    write_artifact,
)
from nbmlops.artifact.lineage import NotebookContext, build_lineage, package_versions
from nbmlops.artifact.nbmlops_loader_v1 import predict_frame
from nbmlops.artifact.profile import build_profile
from nbmlops.artifact.schema import Schema, column_kinds, infer_schema
from nbmlops.config import Settings
from nbmlops.errors import UsageError
from nbmlops.packaging.capture import capture
from nbmlops.packaging.evaluate import evaluate, primary_metric
from nbmlops.packaging.parity import ParityResult, estimator_modules, fresh_process, prewarm
from nbmlops.registry.refs import validate_alias, validate_name
from nbmlops.registry.registry import ModelVersion, Registry

PARITY_ROWS = 200
JOB_ENV = "NBMLOPS_JOB_ID"
PROFILE_ROWS = 100_000


@dataclass(frozen=True, repr=False)
class PackagedVersion(ModelVersion):
    """A version just registered by :func:`package`, with its card and parity result."""

    card: Card | None = None
    parity: ParityResult | None = None
    timings: dict = field(default_factory=dict)

    def _repr_html_(self) -> str:
        return self.card.to_html() if self.card else f"<b>{self.ref}</b>"

    def __repr__(self) -> str:
        return self.card.to_text() if self.card else self.ref


def package(
    name: str,
    model,
    data: pd.DataFrame,
    *,
    target=None,
    preprocess: Sequence[Callable] = (),
    eval: tuple[pd.DataFrame, object] | None = None,  # noqa: A002 - mirrors --eval
    metric: str | None = None,
    alias: str | None = None,
    tags: dict[str, str] | None = None,
    description: str | None = None,
    categorical: Sequence[str] = (),
    free_text: Sequence[str] = (),
    context: NotebookContext | None = None,
    settings: Settings | None = None,
) -> PackagedVersion:
    """Package ``model`` with ``preprocess`` and register it as the next version of ``name``.

    Parameters
    ----------
    model : a fitted scikit-learn estimator or Pipeline (anything with ``predict``).
    data : the raw training inputs, as the service will receive them.
    target : the training labels, for lineage.
    preprocess : functions applied in order to the raw frame before the model.
    eval : ``(X, y)`` held-out data; its metrics are recorded on the version's run.
    metric : the primary metric (default ``f1_macro`` for classifiers, ``rmse`` for regressors).
    alias : an alias to point at the new version (e.g. ``staging``).
    categorical, free_text : text columns of ``data`` to take as categories (values outside
        the training set are refused) or as free text (any string), whatever their number of
        distinct values; by default a text column is categorical when it has at most 100
        distinct values, each seen twice on average.
    """
    timings = _Timer()
    validate_name(name)
    if alias is not None:
        validate_alias(alias)
    data = _check_frame(data, "--data")
    kinds = column_kinds(data, categorical, free_text)
    _check_model(model)
    steps = list(preprocess)
    if target is not None and len(target) != len(data):
        raise UsageError(f"--target has {len(target)} rows but --data has {len(data)}")
    captured = capture(steps) if steps else None
    timings.lap("capture")
    modules = estimator_modules(model) + (captured.modules if captured else ())
    with fresh_process(modules) as fresh, tempfile.TemporaryDirectory() as workdir:
        contents, metrics = _describe(
            name, model, data, kinds, target, steps, captured, eval, metric, context, description
        )
        timings.lap("profile")
        artifact_dir = write_artifact(contents, Path(workdir) / "model")
        timings.lap("write")
        sample = data.sample(min(PARITY_ROWS, len(data)), random_state=0)
        expected = predict_frame(model, steps, sample)
        registry = Registry(settings)
        timings.lap("open registry")
        parity = fresh.check(artifact_dir, sample, expected)
        timings.lap("parity")
        digest = manifest_digest(artifact_dir)
        registered = registry.register(
            name,
            artifact_dir,
            metrics=metrics,
            params=contents.lineage.hyperparameters,
            run_tags=_run_tags(contents.lineage, name),
            version_tags={
                "nbmlops.task": contents.schema.task,
                "nbmlops.primary_metric": contents.primary_metric,
                "nbmlops.data_hash": contents.lineage.data_hash,
                "nbmlops.artifact_sha256": digest,
                "nbmlops.parity": "passed",
                **_job_tags(),
                **(tags or {}),
            },
            description=description,
        )
    _save_job_eval(registry.settings, eval)
    if alias is not None:
        registered = registry.set_alias(registered.ref, alias, reason="package")
    timings.lap("register")
    prewarm()
    card = Card(
        name=name,
        schema=contents.schema,
        lineage=contents.lineage,
        primary_metric=contents.primary_metric,
        artifact_digest=digest,
        parity=parity.describe(),
        estimator_fallback=contents.estimator.fallback,
        version=registered.version,
        aliases=registered.aliases,
        description=description,
    )
    return PackagedVersion(**registered.__dict__, card=card, parity=parity, timings=timings.laps)


class _Timer:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.laps[step] = round(now - self._last, 4)
        self._last = now


def _describe(
    name, model, data, kinds, target, steps, captured, eval_data, metric, context, description
):
    """Everything the artifact says about the model: schema, profile, lineage, card."""
    task = "classification" if hasattr(model, "classes_") else "regression"
    metric_name = primary_metric(task, metric)
    profiled = data if len(data) <= PROFILE_ROWS else data.sample(PROFILE_ROWS, random_state=0)
    outputs = _predict(model, steps, profiled, "--data")
    classes = list(model.classes_) if task == "classification" else None
    metrics = _evaluate(model, steps, eval_data, data, task, classes)
    schema = with_model_limits(
        infer_schema(data, task, outputs["prediction"], classes, kinds), model, steps, data
    )
    lineage = build_lineage(
        data=data,
        target=target,
        hyperparameters=_hyperparameters(model),
        metrics=metrics,
        context=context or NotebookContext(),
        packages=package_versions(captured.modules if captured else ()),
        eval_data=None if eval_data is None else eval_data[0],
    )
    estimator = save_estimator(model)
    card = Card(
        name=name,
        schema=schema,
        lineage=lineage,
        primary_metric=metric_name,
        estimator_fallback=estimator.fallback,
        description=description,
    )
    contents = ArtifactContents(
        name=name,
        estimator=estimator,
        preprocess=tuple(captured.functions) if captured else (),
        preprocess_source=captured.source if captured else None,
        schema=schema,
        profile=build_profile(profiled, _labels_as_categories(outputs, task), kinds=kinds),
        lineage=lineage,
        requirements=tuple(f"{k}=={v}" for k, v in lineage.packages.items()),
        card_markdown=card.to_markdown(),
        primary_metric=metric_name,
    )
    return contents, metrics


#: The largest float32, and a value just beyond it that a float32 model cannot take.
FLOAT32_MAX = float(np.finfo(np.float32).max)
_BEYOND_FLOAT32 = 1e39


def with_model_limits(schema: Schema, model, steps, data: pd.DataFrame) -> Schema:
    """``schema`` with ``max_abs`` set on each float64 column the model cannot take beyond
    the float32 range (scikit-learn's trees compute in float32 and raise on larger values).

    Found by trying: one training row scores, the same row with the column at 1e39 does not.
    """
    row = data.iloc[[0]]
    columns = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow warnings are the point of the probe
        try:
            predict_frame(model, steps, row)
        except Exception:  # noqa: BLE001 - nothing to learn from a row that never scores
            return schema
        for column in schema.columns:
            if column.kind == "numeric" and column.dtype == "float64":
                probe = row.copy()
                probe[column.name] = _BEYOND_FLOAT32
                try:
                    predict_frame(model, steps, probe)
                except Exception:  # noqa: BLE001 - any failure: the model cannot take it
                    column = replace(column, max_abs=FLOAT32_MAX)
            columns.append(column)
    return replace(schema, columns=tuple(columns))


def _job_tags() -> dict[str, str]:
    """Inside ``nbmlops retrain``, mark the version with the job that made it."""
    job = os.environ.get(JOB_ENV)
    return {"nbmlops.job_id": job} if job else {}


def _save_job_eval(settings: Settings, eval_data) -> None:
    """Inside ``nbmlops retrain``, keep the held-out data so the gate can score production on
    exactly what the candidate was scored on."""
    job = os.environ.get(JOB_ENV)
    if not job or eval_data is None:
        return
    folder = settings.runs_dir / job
    folder.mkdir(parents=True, exist_ok=True)
    pd.to_pickle((eval_data[0], eval_data[1]), folder / "eval.pkl")


def _labels_as_categories(outputs: pd.DataFrame, task: str) -> pd.DataFrame:
    """Predicted classes are categories (drift compares their shares), whatever their type."""
    if task != "classification":
        return outputs
    return outputs.assign(prediction=outputs["prediction"].astype(str))


def _check_frame(frame, option: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise UsageError(
            f"{option} must be a pandas DataFrame with named columns, got "
            f"{type(frame).__name__}; wrap it: pd.DataFrame(X, columns=[...])"
        )
    if frame.empty:
        raise UsageError(f"{option} is empty; pass the frame the model was trained on")
    bad = [c for c in frame.columns if not isinstance(c, str)]
    if bad:
        raise UsageError(
            f"{option} has column names that are not strings: {bad[:5]}; name the columns"
        )
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise UsageError(f"{option} has duplicate columns: {duplicated}; rename them")
    return frame


def _check_model(model) -> None:
    if not hasattr(model, "predict"):
        raise UsageError(
            f"--model must be a fitted estimator with .predict(), got {type(model).__name__}"
        )
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if isinstance(model, BaseEstimator):
        try:
            check_is_fitted(model)
        except NotFittedError:
            raise UsageError(
                f"--model ({type(model).__name__}) is not fitted; call .fit(...) in the cell"
            ) from None


def _predict(model, steps, frame: pd.DataFrame, option: str) -> pd.DataFrame:
    try:
        return predict_frame(model, steps, frame)
    except Exception as exc:
        raise UsageError(
            f"the model (after --preprocess) could not predict {option}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _evaluate(model, steps, eval_data, data: pd.DataFrame, task: str, classes) -> dict:
    if eval_data is None:
        return {}
    if not isinstance(eval_data, (tuple, list)) or len(eval_data) != 2:
        raise UsageError("--eval takes two variables: the held-out inputs and labels (X y)")
    x_eval, y_eval = eval_data
    x_eval = _check_frame(x_eval, "--eval X")
    missing = [c for c in data.columns if c not in x_eval.columns]
    if missing:
        raise UsageError(f"--eval X lacks the training columns {missing}")
    if len(x_eval) != len(y_eval):
        raise UsageError(f"--eval X has {len(x_eval)} rows but y has {len(y_eval)}")
    outputs = _predict(model, steps, x_eval[list(data.columns)], "--eval X")
    return evaluate(outputs, y_eval, task, classes)


def _hyperparameters(model) -> dict:
    params = model.get_params(deep=True) if hasattr(model, "get_params") else {}
    plain = {}
    for key, value in params.items():
        if (
            hasattr(value, "get_params")
            or isinstance(value, (list, tuple))
            and any(hasattr(v, "get_params") or isinstance(v, tuple) for v in value)
        ):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            plain[key] = repr(value)
        elif value is None or isinstance(value, (bool, int, float, str)):
            plain[key] = value
        elif isinstance(value, np.generic):
            plain[key] = value.item()
        else:
            plain[key] = repr(value)[:200]
    return plain


def _run_tags(lineage, name: str) -> dict[str, str]:
    tags = {
        "nbmlops.model": name,
        "nbmlops.data_hash": lineage.data_hash,
        "mlflow.user": lineage.user,
    }
    if lineage.notebook_path:
        tags["mlflow.source.name"] = lineage.notebook_path
        tags["mlflow.source.type"] = "NOTEBOOK"
    if lineage.git_commit:
        tags["mlflow.source.git.commit"] = lineage.git_commit
    if lineage.cell_hash:
        tags["nbmlops.cell_hash"] = lineage.cell_hash
    return tags
