"""A real ``mlflow server`` (on PostgreSQL) over HTTP instead of the embedded store: packaging,
resolving, loading."""

from __future__ import annotations

import uuid

import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import nbmlops
from nbmlops.config import Settings
from nbmlops.datasets import make_churn
from nbmlops.registry.registry import Registry


def test_package_and_load_through_a_tracking_server(team_tracking_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_tracking_uri)
    name = f"churn-{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env()
    assert not settings.embedded

    df = make_churn(500, seed=3)
    x, y = df.drop(columns=["churned", "payment_method"]), df["churned"]
    clf = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), ["contract", "region"]),
            (SimpleImputer(), ["tenure_months", "monthly_charges", "support_calls"]),
        ),
        LogisticRegression(max_iter=500),
    ).fit(x, y)
    version = nbmlops.package(name, clf, x, target=y, eval=(x, y), alias="production")
    assert version.source.startswith("mlflow-artifacts:")

    registry = Registry(settings)
    assert registry.resolve(name).version == "1"
    # the server's "no such alias" and "no such model" are told apart from a failure
    assert registry.alias_version(name, "staging") is None
    assert registry.alias_version("no-such-model", "production") is None
    assert registry.get(name, "1").metrics["f1_macro"] > 0.5
    assert not (tmp_path / ".nbmlops" / "mlflow.db").exists()

    model = nbmlops.load(f"{name}@production")
    assert model.path.is_relative_to(settings.home / "cache")
    expected = clf.predict_proba(x)[:, 1]
    got = model.predict(x)
    pd.testing.assert_series_equal(
        got["proba_1"], pd.Series(expected, index=x.index, name="proba_1"), check_exact=False
    )
    assert nbmlops.load(f"models:/{name}@production").metadata["version"] == "1"
