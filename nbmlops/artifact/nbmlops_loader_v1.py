"""Loads an nbmlops artifact: MLflow's ``python_function`` loader module, copied into ``code/``.

nbmlops itself uses this same file to predict in the notebook and to load artifacts, so the
notebook, the parity check, ``nbmlops.load`` and ``mlflow.pyfunc.load_model`` share one
implementation of "apply the captured preprocessing, then the estimator". It needs only the
standard library, pandas, numpy and skops or joblib: no nbmlops, no notebook.

Every file is checked against ``manifest.json`` before anything is unpickled, and what is parsed
or loaded is the very bytes that were checked: a file cannot change between check and load.
No name in the manifest or in ``config.json`` may lead outside the artifact's folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import types
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

MANIFEST = "manifest.json"
DATA_DIR = "data/nbmlops"
CODE_DIR = "code"
CONFIG = DATA_DIR + "/config.json"
#: Files MLflow adds when it downloads a registered model; not part of the manifest.
MLFLOW_ADDED = frozenset({"registered_model_meta"})
#: Module prefixes of types a skops file may contain and still be loaded.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")
CHANGED = "has changed (its SHA-256 differs from manifest.json)"


class ArtifactCheckError(RuntimeError):
    """The artifact differs from its manifest, names a file outside its folder, or needs
    untrusted types: ``file`` says which file, ``reason`` what is wrong with it."""

    def __init__(self, root: Path, file: str, reason: str, modified: bool = True) -> None:
        self.root = str(root)
        self.file = file
        self.reason = reason
        self.modified = modified
        what = "was modified after packaging: " if modified else "cannot be loaded safely: "
        super().__init__(
            f"artifact at {root} {what}{file} {reason}. Refusing to load it; package the model "
            "again or restore the original file."
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Manifest:
    """``manifest.json`` of the artifact at ``root``, read once: its SHA-256 (``sha256``) and
    the digest it records for each file (``files``).

    :meth:`read` returns a file's bytes after checking them, so a caller parses or loads
    exactly what was checked; :meth:`check` checks every file and refuses files added since.
    Each file is hashed once: a file :meth:`read` has checked is not hashed again by
    :meth:`check`, and :meth:`check` can keep the bytes of the files a caller reads next.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._real_root = self.root.resolve()
        raw = self._bytes(MANIFEST)
        self.sha256 = hashlib.sha256(raw).hexdigest()
        try:
            files = json.loads(raw)["files"]
        except (ValueError, KeyError, TypeError):
            files = None
        if not isinstance(files, dict) or not all(isinstance(d, str) for d in files.values()):
            raise ArtifactCheckError(self.root, MANIFEST, "is not a valid manifest")
        for name in files:
            self._path(name)
        self.files: dict[str, str] = files
        self._checked: set[str] = set()
        self._kept: dict[str, bytes] = {}

    def read(self, name: str) -> bytes:
        """The bytes of the file ``name`` (a manifest name), checked against the manifest."""
        kept = self._kept.pop(name, None)
        if kept is not None:
            return kept
        if name not in self.files:
            raise ArtifactCheckError(self.root, name, "is not listed in manifest.json")
        data = self._bytes(name)
        if hashlib.sha256(data).hexdigest() != self.files[name]:
            raise ArtifactCheckError(self.root, name, CHANGED)
        self._checked.add(name)
        return data

    def check(self, keep: Iterable[str] = ()) -> None:
        """Check every file against the manifest and refuse files added since packaging (or
        links leading outside the folder); the bytes of ``keep`` stay for :meth:`read`."""
        keep = set(keep)
        for name, digest in sorted(self.files.items()):
            if name in keep:
                self._kept[name] = self.read(name)
            elif name not in self._checked:
                path = self._path(name)
                if not path.is_file():
                    raise ArtifactCheckError(self.root, name, "is missing")
                if sha256_file(path) != digest:
                    raise ArtifactCheckError(self.root, name, CHANGED)
                self._checked.add(name)
        for path in sorted(self.root.rglob("*")):
            name = path.relative_to(self.root).as_posix()
            if path.is_symlink() and not self._inside(path):
                raise ArtifactCheckError(
                    self.root, name, f"is a link to {path.resolve()}, outside the artifact folder"
                )
            if path.is_file() and name not in self.files and name != MANIFEST:
                if name not in MLFLOW_ADDED and "__pycache__" not in path.parts:
                    raise ArtifactCheckError(self.root, name, "was added after packaging")

    def model_files(self, config: dict) -> tuple[str, str | None]:
        """The manifest names of the estimator and of the preprocessing source (None without
        preprocessing) that ``config`` names; each must be a file name in its folder."""
        estimator = f"{DATA_DIR}/{self._file_name(config, 'estimator_file', DATA_DIR)}"
        if not config.get("preprocess"):
            return estimator, None
        return estimator, f"{CODE_DIR}/{self._file_name(config, 'preprocess_file', CODE_DIR)}"

    def _file_name(self, config: dict, key: str, folder: str) -> str:
        value = config.get(key)
        if not isinstance(value, str) or value in ("", ".", "..") or "/" in value or "\\" in value:
            raise ArtifactCheckError(
                self.root,
                CONFIG,
                f"names {value!r} as its {key}, where a file name inside {folder}/ belongs",
            )
        return value

    def _path(self, name: str) -> Path:
        """``root / name``, refusing a name that leads outside the folder."""
        parts = PurePosixPath(name).parts
        plain = (
            bool(parts)
            and "\\" not in name
            and not PurePosixPath(name).is_absolute()
            and not any(p in ("", ".", "..") for p in parts)
        )
        path = self.root / name
        if not plain or not self._inside(path):
            raise ArtifactCheckError(self.root, name, "leads outside the artifact folder")
        return path

    def _inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self._real_root)

    def _bytes(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactCheckError(self.root, name, "is missing") from None


def load_estimator(data: bytes, estimator_format: str, root: Path, name: str):
    """The fitted estimator from its checked bytes, refusing skops types outside the trusted
    set."""
    if estimator_format == "skops":
        import skops.io

        untrusted = skops.io.get_untrusted_types(data=data)
        refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
        if refused:
            raise ArtifactCheckError(
                root,
                name,
                f"needs types outside the trusted set: {', '.join(refused)}",
                modified=False,
            )
        return skops.io.loads(data, trusted=untrusted)
    import joblib

    return joblib.load(io.BytesIO(data))


def load_steps(source: bytes, names: list[str], filename: str) -> list:
    """Run the captured preprocessing source (its checked bytes) as a module named for its
    content, and return the functions ``names``."""
    digest = hashlib.sha256(source).hexdigest()
    module = types.ModuleType("nbmlops_preprocess_" + digest[:16])
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    return [getattr(module, name) for name in names]


def score_frame(estimator, steps, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply ``steps`` then ``estimator``: the predictions, and the class probabilities (one
    column per ``estimator.classes_``) when the estimator gives them, else None."""
    features = frame
    for step in steps:
        features = step(features)
    estimator, features = _transform_once(estimator, features)
    if _predicts_by_its_probabilities(estimator):
        proba = np.asarray(estimator.predict_proba(features), dtype=float)
        return estimator.classes_.take(np.argmax(proba, axis=1), axis=0), proba
    predictions = np.asarray(estimator.predict(features))
    if len(predictions) != len(frame):
        raise ValueError(
            f"the model returned {len(predictions)} predictions for {len(frame)} input rows; "
            "preprocessing must keep one row per input row"
        )
    if not (hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_")):
        return predictions, None
    return predictions, np.asarray(estimator.predict_proba(features), dtype=float)


def _predicts_by_its_probabilities(estimator) -> bool:
    """Whether ``estimator.predict`` is scikit-learn's forest ``predict``, which is the argmax
    of ``predict_proba``: computing both would walk every tree twice."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    forest_predict = RandomForestClassifier.predict
    return (
        getattr(type(estimator), "predict", None) is forest_predict
        and ExtraTreesClassifier.predict is forest_predict
        and getattr(estimator, "n_outputs_", None) == 1
    )


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
    """A loaded artifact: estimator plus captured preprocessing.

    Given only ``root`` (MLflow, the parity check), every file is checked first. nbmlops, which
    has already read the artifact against its ``manifest``, passes it with ``config``: only the
    estimator and the preprocessing are read then, each checked as it is read.
    """

    def __init__(
        self, root: Path, manifest: Manifest | None = None, config: dict | None = None
    ) -> None:
        self.root = Path(root)
        if manifest is None or config is None:
            manifest = Manifest(self.root)
            config = json.loads(manifest.read(CONFIG))
            manifest.check(keep=[f for f in manifest.model_files(config) if f])
        self.config = config
        estimator_file, preprocess_file = manifest.model_files(config)
        self.steps = []
        if preprocess_file is not None:
            source = manifest.read(preprocess_file)
            self.steps = load_steps(source, config["preprocess"], str(self.root / preprocess_file))
        self.estimator = load_estimator(
            manifest.read(estimator_file), config["estimator_format"], self.root, estimator_file
        )

    def predict(self, model_input, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return predict_frame(self.estimator, self.steps, frame)

    def score(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions and class probabilities as arrays (see :func:`score_frame`)."""
        return score_frame(self.estimator, self.steps, frame)


def _load_pyfunc(data_path: str, model_config=None) -> ArtifactPredictor:
    """MLflow's entry point: ``data_path`` is the artifact's ``data/nbmlops`` folder."""
    return ArtifactPredictor(Path(data_path).parent.parent)
