"""A store with churn v1 and a server for it, shared by the serving tests of one module."""

from __future__ import annotations

import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import nbmlops
from nbmlops.config import Settings
from nbmlops.datasets import make_churn
from nbmlops.serving.process import serve
from tests.capture_examples import add_charge_per_call

NUMERIC = ["tenure_months", "monthly_charges", "support_calls", "charge_per_call"]


def logistic_pipeline(numeric: list[str]):
    """Impute ``numeric``, one-hot contract and region, logistic regression."""
    return make_pipeline(
        ColumnTransformer(
            [
                ("num", SimpleImputer(), numeric),
                ("cat", OneHotEncoder(handle_unknown="ignore"), ["contract", "region"]),
            ]
        ),
        LogisticRegression(max_iter=1000),
    )


@pytest.fixture(scope="module", name="store")
def store_fixture(tmp_path_factory) -> Settings:
    """A store with churn v1 (captured preprocessing, categorical, string and bool columns)."""
    home = tmp_path_factory.mktemp("serving") / ".nbmlops"
    settings = Settings.from_env({"NBMLOPS_HOME": str(home)})
    df = make_churn(600, seed=0)
    x, y = df.drop(columns="churned"), df["churned"]
    clf = logistic_pipeline(NUMERIC).fit(add_charge_per_call(x), y)
    nbmlops.package("churn", clf, x, target=y, preprocess=[add_charge_per_call], settings=settings)
    return settings


@pytest.fixture(scope="module", name="server")
def server_fixture(store):
    handle = serve("churn", settings=store)
    yield handle
    handle.stop()
