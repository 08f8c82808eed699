"""Loads an nbmlops artifact: MLflow's ``python_function`` loader module, copied into ``code/``.

nbmlops itself uses this same file to predict in the notebook and to load artifacts, so the
notebook, the parity check, ``nbmlops.load`` and ``mlflow.pyfunc.load_model`` share one
implementation of "apply the captured preprocessing, then the estimator". It needs only the
standard library, pandas, numpy and skops or joblib: no nbmlops, no notebook.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd

MANIFEST = "manifest.json"
DATA_DIR = "data/nbmlops"
CONFIG = DATA_DIR + "/config.json"
#: Files MLflow adds when it downloads a registered model; not part of the manifest.
MLFLOW_ADDED = frozenset({"registered_model_meta"})
#: Module prefixes of types a skops file may contain and still be loaded.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


class ArtifactCheckError(RuntimeError):
    """The artifact differs from its manifest or needs untrusted types."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_problem(root: Path) -> tuple[str, str] | None:
    """The first file that differs from ``manifest.json`` as ``(file, reason)``, or None."""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        return MANIFEST, "is missing"
    try:
        recorded = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError):
        return MANIFEST, "is not a valid manifest"
    for name, digest in sorted(recorded.items()):
        path = root / name
        if not path.is_file():
            return name, "is missing"
        if sha256_file(path) != digest:
            return name, "has changed (its SHA-256 differs from manifest.json)"
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_file() and name not in recorded and name != MANIFEST:
            if name not in MLFLOW_ADDED and "__pycache__" not in path.parts:
                return name, "was added after packaging"
    return None


def check_manifest(root: Path) -> None:
    problem = manifest_problem(root)
    if problem is not None:
        file, reason = problem
        raise ArtifactCheckError(
            f"artifact at {root} was modified after packaging: {file} {reason}. "
            "Refusing to load it; package the model again or restore the original file."
        )


def load_estimator(root: Path, config: dict):
    """Load the fitted estimator, refusing skops types outside the trusted set."""
    path = root / DATA_DIR / config["estimator_file"]
    if config["estimator_format"] == "skops":
        import skops.io

        untrusted = skops.io.get_untrusted_types(file=path)
        refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
        if refused:
            raise ArtifactCheckError(
                f"{path.name} needs types outside the trusted set: {', '.join(refused)}"
            )
        return skops.io.load(path, trusted=untrusted)
    import joblib

    return joblib.load(path)


def load_steps(root: Path, config: dict) -> list:
    """Import the captured preprocessing under a name unique to its content."""
    names = config.get("preprocess", [])
    if not names:
        return []
    path = root / "code" / config["preprocess_file"]
    module_name = "nbmlops_preprocess_" + sha256_file(path)[:16]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [getattr(module, name) for name in names]


def score_frame(estimator, steps, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply ``steps`` then ``estimator``: the predictions, and the class probabilities (one
    column per ``estimator.classes_``) when the estimator gives them, else None."""
    features = frame
    for step in steps:
        features = step(features)
    estimator, features = _transform_once(estimator, features)
    predictions = np.asarray(estimator.predict(features))
    if len(predictions) != len(frame):
        raise ValueError(
            f"the model returned {len(predictions)} predictions for {len(frame)} input rows; "
            "preprocessing must keep one row per input row"
        )
    if not (hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_")):
        return predictions, None
    return predictions, np.asarray(estimator.predict_proba(features), dtype=float)


def predict_frame(estimator, steps, frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`score_frame` as a frame: a ``prediction`` column, ``proba_<label>`` columns."""
    predictions, proba = score_frame(estimator, steps, frame)
    columns = {"prediction": predictions}
    if proba is not None:
        final = _final_step(estimator)
        for i, label in enumerate(final.classes_):
            columns[f"proba_{label}"] = proba[:, i]
    return pd.DataFrame(columns, index=frame.index, copy=False)


def _transform_once(estimator, features):
    """For a scikit-learn Pipeline: run its transformers once and return the final step with
    the transformed features, so ``predict`` and ``predict_proba`` share the work (this is
    what ``Pipeline.predict`` does inside, twice)."""
    final = _final_step(estimator)
    if final is estimator:
        return estimator, features
    return final, estimator[:-1].transform(features)


def _final_step(estimator):
    """The estimator that predicts: a Pipeline's last step when it can, else ``estimator``."""
    from sklearn.pipeline import Pipeline

    if not isinstance(estimator, Pipeline) or len(estimator.steps) < 2:
        return estimator
    final = estimator.steps[-1][1]
    if final in (None, "passthrough") or not hasattr(final, "predict"):
        return estimator
    return final


class ArtifactPredictor:
    """A loaded artifact: estimator plus captured preprocessing."""

    def __init__(self, root: Path, verify: bool = True) -> None:
        self.root = Path(root)
        if verify:
            check_manifest(self.root)
        self.config = json.loads((self.root / CONFIG).read_text())
        self.steps = load_steps(self.root, self.config)
        self.estimator = load_estimator(self.root, self.config)

    def predict(self, model_input, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return predict_frame(self.estimator, self.steps, frame)

    def score(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions and class probabilities as arrays (see :func:`score_frame`)."""
        return score_frame(self.estimator, self.steps, frame)


def _load_pyfunc(data_path: str, model_config=None) -> ArtifactPredictor:
    """MLflow's entry point: ``data_path`` is the artifact's ``data/nbmlops`` folder."""
    return ArtifactPredictor(Path(data_path).parent.parent)
