"""``nbmlops export --format onnx``: a graph that onnxruntime proves equal to the model, attached
to the version; and a clear refusal when it cannot be."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

import nbmlops
from nbmlops.cli import main
from nbmlops.datasets import make_churn
from nbmlops.errors import ArtifactError, ParityError
from nbmlops.exports.onnx import ONNX_TAG, graph_feeds
from nbmlops.registry.registry import Registry
from tests.capture_examples import add_charge_per_call
from tests.churn_store import (
    NAME,
    churn_registry_fixture,  # noqa: F401 - a fixture
    churn_store_fixture,  # noqa: F401 - a fixture
)

NUMERIC = ["tenure_months", "monthly_charges", "support_calls"]


def attached(name: str, version: str) -> dict[str, bytes]:
    """The files attached under ``onnx/`` to the version's run."""
    registry = Registry()
    found = registry.get(name, version)
    folder = registry.client.download_artifacts(found.run_id, "onnx")
    return {p.name: p.read_bytes() for p in Path(folder).iterdir()}


def test_one_hot_categories_and_captured_preprocessing_export_with_parity(churn_registry, tmp_path):
    done = nbmlops.export(f"{NAME}@v2", output=tmp_path / "onnx")
    assert done.max_abs_diff <= 1e-4 and done.labels_agree is True and done.rows > 50
    assert "add_charge_per_call" in done.preprocessing and "before the graph" in done.preprocessing
    assert {"charge_per_call", "contract", "region"} <= {i["name"] for i in done.inputs}

    # new rows: the preprocessing in Python, then the graph, answer what the notebook predicted
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    features = add_charge_per_call(churn_registry.X_score)
    labels, proba = session.run(None, graph_feeds(features, done.inputs))
    expected = churn_registry.expected["2"]
    np.testing.assert_allclose(proba, expected[["proba_0", "proba_1"]].to_numpy(), atol=1e-4)
    assert labels.tolist() == expected["prediction"].tolist()

    files = attached(NAME, "2")
    assert set(files) == {"model.onnx", "export.json"}
    record = json.loads(files["export.json"])
    assert record["sha256"] == hashlib.sha256(files["model.onnx"]).hexdigest()
    tag = Registry().get(NAME, "2").tags[ONNX_TAG]
    assert tag == hashlib.sha256(files["export.json"]).hexdigest()


def test_a_numeric_pipeline_without_preprocessing_exports_from_the_cli(settings, tmp_path, capsys):
    df = make_churn(400, seed=4)
    x, y = df[NUMERIC], df["churned"]
    model = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()).fit(x, y)
    nbmlops.package("numeric", model, x, target=y)
    assert main(["export", "numeric", "--output", str(tmp_path / "out"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["preprocessing"].startswith("none") and record["labels_agree"] is True
    assert [i["name"] for i in record["inputs"]] == NUMERIC
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    _, proba = session.run(None, graph_feeds(x, record["inputs"]))
    np.testing.assert_allclose(proba, model.predict_proba(x), atol=1e-5)


def test_a_graph_that_does_not_reproduce_the_model_is_refused_and_not_attached(settings):
    # float32 keeps about 7 digits: around 1e8 the graph sees steps of 8 where the model
    # learned from steps of 0.5
    x = pd.DataFrame({"meters": 1e8 + 0.5 * np.arange(400)})
    y = pd.Series(np.arange(400, dtype=float))
    nbmlops.package("survey", LinearRegression().fit(x, y), x, target=y)
    with pytest.raises(ParityError, match="does not reproduce the model.*nothing was attached"):
        nbmlops.export("survey")
    registry = Registry()
    assert registry.client.list_artifacts(registry.get("survey", "1").run_id, "onnx") == []
    assert ONNX_TAG not in registry.get("survey", "1").tags


def test_a_step_with_no_converter_is_one_message_saying_what_to_do(settings, capsys):
    df = make_churn(300, seed=5)
    x, y = df[NUMERIC], df["churned"]
    model = make_pipeline(SimpleImputer(), FunctionTransformer(np.log1p), LogisticRegression()).fit(
        x, y
    )
    nbmlops.package("logged", model, x, target=y)
    with pytest.raises(ArtifactError, match="skl2onnx cannot convert this model"):
        nbmlops.export("logged")
    assert main(["export", "logged"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nbmlops: skl2onnx cannot convert") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_converter_failing_inside_is_named_with_its_library_versions(settings):
    """The quickstart's HistGradientBoosting: converted with parity where the converter works;
    where it writes an invalid node (skl2onnx 1.20 with protobuf 7), one line naming the
    versions, not a hint about custom transformers."""
    df = make_churn(300, seed=7)
    x, y = df[NUMERIC], df["churned"]
    model = make_pipeline(SimpleImputer(), HistGradientBoostingClassifier(max_iter=5)).fit(x, y)
    nbmlops.package("boosted", model, x, target=y)
    try:
        done = nbmlops.export("boosted")
    except ArtifactError as exc:
        message = str(exc)
        assert "skl2onnx cannot convert this model" in message and "\n" not in message
        assert "protobuf" in message and "serve with the scikit-learn runtime" in message
        assert "custom transformer" not in message
    else:
        assert done.labels_agree and done.max_abs_diff <= done.tolerance


def test_a_datetime_input_is_one_message_saying_what_to_do(settings):
    df = make_churn(300, seed=6)
    x, y = df[NUMERIC].copy(), df["churned"]
    x["signed_up"] = pd.date_range("2026-01-01", periods=len(x), freq="h", tz="Europe/Paris")
    model = make_pipeline(
        make_column_transformer((SimpleImputer(), NUMERIC)), LogisticRegression()
    ).fit(x, y)
    nbmlops.package("dated", model, x, target=y)
    with pytest.raises(ArtifactError, match="'signed_up' is a datetime.*turn it into numbers"):
        nbmlops.export("dated")
    assert ONNX_TAG not in Registry().get("dated", "1").tags
