"""An ONNX twin of a registered version, converted with skl2onnx and proven against the
scikit-learn model with onnxruntime before it is attached to the version.

The graph holds the estimator (a whole Pipeline: ColumnTransformer, encoders, the model); the
captured Python preprocessing, which ONNX cannot express, stays Python and runs before the graph:
the export's input contract is the preprocessing's output columns, and the report says so.
Numbers enter the graph as float32 (skl2onnx's trees refuse doubles); strings as strings.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nbmlops.artifact.validation import REJECT, Validator
from nbmlops.config import Settings
from nbmlops.errors import ArtifactError, ParityError
from nbmlops.registry.load import LoadedModel, load
from nbmlops.registry.registry import Registry

#: Largest difference allowed between the graph's and scikit-learn's probabilities (and, for
#: a regressor, predictions relative to their scale); class labels must be identical.
PARITY_TOLERANCE = 1e-4
#: The registry tag holding the SHA-256 of a version's export.json (its ONNX twin's record).
ONNX_TAG = "nbmlops.onnx_sha256"
ARTIFACT_FOLDER = "onnx"
OPSET = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class OnnxExport:
    """An ONNX twin: where it is, what it takes, and how closely it reproduces the model."""

    model: str
    version: str
    path: str
    sha256: str
    inputs: tuple[dict, ...]  # {"name", "type"}: the graph's inputs, one per feature column
    preprocessing: str  # what runs before the graph
    rows: int  # rows of the parity check
    max_abs_diff: float
    labels_agree: bool | None  # None for a regressor
    tolerance: float = PARITY_TOLERANCE

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        labels = "" if self.labels_agree is None else ", identical labels"
        return (
            f"{self.model} v{self.version} exported to ONNX ({Path(self.path).name}, sha256 "
            f"{self.sha256[:12]}): parity on {self.rows} rows, largest difference "
            f"{self.max_abs_diff:.2e} (at most {self.tolerance:g}){labels}; "
            f"preprocessing: {self.preprocessing}"
        )


def export_onnx(
    ref: str, output: Path | None = None, settings: Settings | None = None
) -> OnnxExport:
    """Convert ``ref`` to ONNX, prove parity with onnxruntime, attach the graph and its record
    to the version (artifacts ``onnx/model.onnx`` and ``onnx/export.json`` of its run, the
    record's SHA-256 in the version's :data:`ONNX_TAG` tag) and write them to ``output`` too.
    Raises :class:`~nbmlops.errors.ParityError` (nothing attached) when the graph disagrees."""
    settings = settings or Settings.from_env()
    loaded = load(ref, settings)
    sample = features(loaded.predictor.steps, _sample_rows(loaded))
    graph, inputs = _convert(loaded.predictor.estimator, sample)
    report = _parity(loaded, graph, sample, inputs)
    folder = Path(output) if output else Path(tempfile.mkdtemp(prefix="nbmlops-onnx-"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(graph)
    steps = loaded.metadata["preprocess"]
    export = OnnxExport(
        model=loaded.metadata["name"],
        version=str(loaded.metadata["version"]),
        path=str(folder / "model.onnx"),
        sha256=hashlib.sha256(graph).hexdigest(),
        inputs=tuple(inputs),
        preprocessing=(
            f"Python ({', '.join(steps)}) runs before the graph; its output is the graph's input"
            if steps
            else "none: the graph takes the schema's columns"
        ),
        **report,
    )
    record = json.dumps(export.to_dict(), indent=2).encode()
    (folder / "export.json").write_bytes(record)
    if loaded.version is not None:
        registry = Registry(settings)
        for name in ("model.onnx", "export.json"):
            registry.client.log_artifact(loaded.version.run_id, str(folder / name), ARTIFACT_FOLDER)
        registry.client.set_model_version_tag(
            export.model, export.version, ONNX_TAG, hashlib.sha256(record).hexdigest()
        )
    return export


def _sample_rows(loaded: LoadedModel) -> pd.DataFrame:
    """Rows drawn from the profile's per-column samples (training values), typed as training
    typed them."""
    samples = {c.name: loaded.profile.client_sample(c) for c in loaded.schema.columns}
    n = min((len(v) for v in samples.values()), default=0)
    if n == 0:
        raise ArtifactError("the artifact's profile holds no sample rows to check parity on")
    records = [{name: values[i] for name, values in samples.items()} for i in range(n)]
    validator = Validator(loaded.schema, REJECT)
    return validator.builder.conform(pd.DataFrame.from_records(records))


def features(steps: list, rows: pd.DataFrame) -> pd.DataFrame:
    """What the graph takes: ``rows`` through the captured preprocessing ``steps``."""
    frame = rows
    for step in steps:
        frame = step(frame)
    if not isinstance(frame, pd.DataFrame):
        raise ArtifactError(
            "the preprocessing returns a "
            f"{type(frame).__name__}, not a DataFrame: ONNX inputs need named columns"
        )
    return frame


def _convert(estimator, features: pd.DataFrame) -> tuple[bytes, list[dict]]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    inputs, types = [], []
    for name, dtype in features.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            types.append((str(name), FloatTensorType([None, 1])))
            inputs.append({"name": str(name), "type": "float32"})
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            raise ArtifactError(
                f"column {name!r} is a datetime, which ONNX has no type for: turn it into "
                "numbers in the preprocessing (e.g. days since a date) and package again"
            )
        else:
            types.append((str(name), StringTensorType([None, 1])))
            inputs.append({"name": str(name), "type": "string"})
    options = {id(_final(estimator)): {"zipmap": False}} if _is_classifier(estimator) else None
    try:
        graph = convert_sklearn(estimator, initial_types=types, options=options, target_opset=OPSET)
    except Exception as exc:  # noqa: BLE001 - every converter gap becomes one message
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        advice = (
            "A custom transformer or estimator needs a registered skl2onnx converter; a step "
            "written as a notebook function belongs in the captured preprocessing instead"
        )
        if said.startswith("Unable to create node"):  # the converter wrote an invalid node
            cause = exc.__cause__ or exc.__context__
            said = f"{said.split(' with ')[0]} ({cause or 'no detail'})"
            advice = (
                f"This converter fails with {_versions('skl2onnx', 'onnx', 'protobuf')}: serve "
                "with the scikit-learn runtime, or try other versions of these libraries"
            )
        raise ArtifactError(
            f"skl2onnx cannot convert this model: {type(exc).__name__}: {said}. {advice}"
        ) from None
    return graph.SerializeToString(), inputs


def _versions(*names: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    def one(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} (not installed)"

    return ", ".join(one(name) for name in names)


def _parity(loaded: LoadedModel, graph: bytes, features: pd.DataFrame, inputs) -> dict:
    """Run the graph and the scikit-learn model on the same rows; raise if they differ."""
    import onnxruntime

    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    feeds = graph_feeds(features, inputs)
    outputs = session.run(None, feeds)
    estimator = loaded.predictor.estimator
    name, version = loaded.metadata["name"], loaded.metadata["version"]
    if _is_classifier(estimator):
        expected = np.asarray(estimator.predict_proba(features), dtype=float)
        expected_labels = np.asarray(estimator.predict(features))
        labels, proba = np.asarray(outputs[0]), np.asarray(outputs[1], dtype=float)
        diff = float(np.max(np.abs(proba - expected))) if len(proba) else 0.0
        agree = bool(np.array_equal(labels.astype(str), expected_labels.astype(str)))
    else:
        expected = np.asarray(estimator.predict(features), dtype=float)
        got = np.asarray(outputs[0], dtype=float).reshape(len(expected))
        scale = max(1.0, float(np.max(np.abs(expected))) if len(expected) else 1.0)
        diff, agree = float(np.max(np.abs(got - expected)) / scale), None
    if diff > PARITY_TOLERANCE or agree is False:
        raise ParityError(
            f"the ONNX graph of {name} v{version} does not reproduce the model on "
            f"{len(features)} training rows: largest difference {diff:.3g} (allowed "
            f"{PARITY_TOLERANCE:g}){'' if agree is not False else ', labels differ'}; nothing "
            "was attached. float32 inputs round large or finely scaled numbers: scale them in "
            "the preprocessing, or serve with the scikit-learn runtime"
        )
    return {"rows": len(features), "max_abs_diff": diff, "labels_agree": agree}


def graph_feeds(features: pd.DataFrame, inputs) -> dict[str, np.ndarray]:
    """The graph's inputs for a frame of feature columns: float32 or string, one column each
    (a missing number is NaN, a missing string empty)."""
    feeds = {}
    for spec in inputs:
        column = features[spec["name"]]
        values = _floats(column) if spec["type"] == "float32" else _strings(column)
        feeds[spec["name"]] = values.reshape(-1, 1)
    return feeds


def _floats(column: pd.Series) -> np.ndarray:
    if column.dtype.kind in "biuf":  # numpy's own numbers and booleans: no missing marker
        return column.to_numpy(dtype=np.float32)
    dtype = column.dtype
    if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
        column = pd.to_numeric(column, errors="coerce")
    return column.to_numpy(dtype=np.float32, na_value=np.nan)


def _strings(column: pd.Series) -> np.ndarray:
    values = column.to_numpy(dtype=object, na_value="")
    return np.array([v if type(v) is str else str(v) for v in values], dtype=object)


def _final(estimator):
    from sklearn.pipeline import Pipeline

    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def _is_classifier(estimator) -> bool:
    return hasattr(_final(estimator), "predict_proba") and hasattr(estimator, "classes_")
