"""The parity check refuses preprocessing whose answer depends on the rows scored with it."""

from __future__ import annotations

import pytest
from sklearn.linear_model import LogisticRegression

import nbmlops
from nbmlops.datasets import make_churn
from nbmlops.registry.registry import Registry
from tests.capture_examples import center_charges


def test_batch_dependent_preprocessing_registers_nothing(settings):
    df = make_churn(500, seed=0)
    x, y = df.drop(columns="churned"), df["churned"]
    clf = LogisticRegression().fit(center_charges(x), y)
    with pytest.raises(nbmlops.ParityError, match="scored alone") as info:
        nbmlops.package("churn", clf, x, preprocess=[center_charges], settings=settings)
    assert "statistics of the whole frame" in str(info.value)
    assert info.value.details and "notebook" in info.value.details[0]
    assert Registry(settings).list_models() == []


def test_a_feature_the_served_frame_cannot_rebuild_registers_nothing(settings):
    """Rows sent as JSON lose their labels: a featurizer reading the index is skew."""
    from tests.capture_examples import reads_the_index
    from tests.served_model import NUMERIC, logistic_pipeline

    df = make_churn(500, seed=0)
    x, y = df.drop(columns="churned"), df["churned"]
    x.index = x.index * 3 + 1  # labels a served frame does not have
    clf = logistic_pipeline([*NUMERIC, "row_label"]).fit(reads_the_index(x), y)
    with pytest.raises(nbmlops.ParityError, match="sent as JSON records"):
        nbmlops.package("skewed", clf, x, target=y, preprocess=[reads_the_index], settings=settings)
    with pytest.raises(nbmlops.ModelNotFoundError):
        nbmlops.load("skewed", settings=settings)


def hangs_outside_the_notebook(frame):
    """Quick in the notebook; blocks in the fresh process (as on a file only the notebook has)."""
    import os
    import time

    if "nbmlops-parity-" in os.getcwd():
        time.sleep(120)
    return frame


def test_a_parity_check_that_times_out_is_a_parity_error(settings, monkeypatch):
    monkeypatch.setattr("nbmlops.packaging.parity.PARITY_TIMEOUT", 3.0)
    df = make_churn(200, seed=0)
    x, y = df[["monthly_charges", "support_calls"]], df["churned"]
    clf = LogisticRegression().fit(x, y)
    with pytest.raises(nbmlops.ParityError) as info:
        nbmlops.package("slow", clf, x, preprocess=[hangs_outside_the_notebook], settings=settings)
    message = str(info.value)
    assert "\n" not in message
    assert "within 3 s" in message and "nothing was registered" in message
    assert Registry(settings).list_models() == []
