"""Artifacts packaged by earlier nbmlops keep loading, serving and predicting exactly the same."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

import nbmlops
from nbmlops.artifact.files import ArtifactFiles
from nbmlops.artifact.frames import to_records
from nbmlops.artifact.nbmlops_loader_v1 import ArtifactPredictor
from nbmlops.artifact.validation import Validator

OLD = Path(__file__).resolve().parent.parent / "fixtures" / "churn-bbeeb50"


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return pd.DataFrame(json.loads((OLD / "rows.json").read_text()))


@pytest.fixture(scope="module")
def predicted() -> pd.DataFrame:
    return pd.read_csv(OLD / "predictions.csv")


def assert_same(predicted: pd.DataFrame, got: pd.DataFrame) -> None:
    assert list(got.columns) == list(predicted.columns)
    assert got["prediction"].tolist() == predicted["prediction"].tolist()
    for column in predicted.columns[1:]:
        np.testing.assert_allclose(got[column].to_numpy(float), predicted[column], atol=1e-12)


def test_format_1_files_are_read():
    files = ArtifactFiles.read(OLD / "artifact")
    assert files.schema.format_version == 1
    assert files.profile.format_version == 1 and files.lineage.data_hash
    assert files.schema.column("contract").categories  # sorted, as format 1 stored them


def test_nbmlops_load_predicts_what_the_old_code_predicted(rows, predicted):
    assert_same(predicted, nbmlops.load(OLD / "artifact").predict(rows).reset_index(drop=True))


def test_mlflows_own_loader_predicts_what_the_old_code_predicted(rows, predicted):
    model = mlflow.pyfunc.load_model(str(OLD / "artifact"))
    contracts = ArtifactFiles.read(OLD / "artifact").schema.column("contract").categories
    typed = rows.astype({"contract": pd.CategoricalDtype(list(contracts))})
    assert_same(predicted, model.predict(typed).reset_index(drop=True))


def test_the_servers_path_predicts_what_the_old_code_predicted(rows, predicted):
    """Records as a client sends them, through the checks and frame builder the server uses."""
    files = ArtifactFiles.read(OLD / "artifact")
    validator = Validator(files.schema)
    frame = validator.frame(to_records(rows))
    assert_same(predicted, ArtifactPredictor(files.root).predict(frame))
