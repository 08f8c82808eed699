"""A registry with three packaged versions of a churn model, for the registry and CLI tests.

Packaging takes seconds, so the versions are packaged once per session into their own store;
each test then gets a private copy of the registry database (``churn_registry``), so promoting,
rolling back and archiving in one test never leaks into another. The copies share the session
store's artifact files, which the tests only read. A test module uses them by importing
``churn_store_fixture`` and ``churn_registry_fixture``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import nbmlops
from nbmlops.config import Settings
from nbmlops.datasets import make_churn
from tests.capture_examples import add_charge_per_call

NAME = "churn"
NUMERIC = ["tenure_months", "monthly_charges", "support_calls", "charge_per_call"]
CATEGORICAL = ["contract", "region"]
#: Regularisation of versions 1, 2 and 3: different enough that their probabilities differ.
C_BY_VERSION = {"1": 0.01, "2": 1.0, "3": 100.0}


def build_pipeline(c: float) -> Pipeline:
    return make_pipeline(
        ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC),
                ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ]
        ),
        LogisticRegression(C=c, max_iter=1000),
    )


def notebook_predictions(model: Pipeline, frame: pd.DataFrame) -> pd.DataFrame:
    """What the notebook itself predicts: the preprocessing, then the fitted pipeline."""
    features = add_charge_per_call(frame)
    out = pd.DataFrame({"prediction": model.predict(features)}, index=frame.index)
    for i, label in enumerate(model.classes_):
        out[f"proba_{label}"] = model.predict_proba(features)[:, i]
    return out


@dataclass(frozen=True)
class ChurnStore:
    """The session's store and what each version's notebook predicted on ``X_score``."""

    settings: Settings
    X_score: pd.DataFrame
    expected: dict[str, pd.DataFrame]
    f1_macro: dict[str, float]


@pytest.fixture(scope="session", name="churn_store")
def churn_store_fixture(tmp_path_factory) -> ChurnStore:
    """Versions 1, 2 and 3 of ``churn``, packaged with ``nbmlops.package`` (no aliases set)."""
    home = tmp_path_factory.mktemp("churn-store") / ".nbmlops"
    settings = Settings.from_env({"NBMLOPS_HOME": str(home)})
    df = make_churn(400, seed=0)
    X, y = df.drop(columns="churned"), df["churned"]
    X_train, X_test, y_train, y_test = X.iloc[:300], X.iloc[300:], y.iloc[:300], y.iloc[300:]
    X_score = make_churn(60, seed=7).drop(columns="churned")
    expected, f1 = {}, {}
    for version, c in C_BY_VERSION.items():
        model = build_pipeline(c).fit(add_charge_per_call(X_train), y_train)
        packaged = nbmlops.package(
            NAME,
            model,
            X_train,
            target=y_train,
            preprocess=[add_charge_per_call],
            eval=(X_test, y_test),
            description=f"logistic regression, C={c}",
            settings=settings,
        )
        assert packaged.version == version
        expected[version] = notebook_predictions(model, X_score)
        f1[version] = f1_score(y_test, model.predict(add_charge_per_call(X_test)), average="macro")
    return ChurnStore(settings=settings, X_score=X_score, expected=expected, f1_macro=f1)


@pytest.fixture(name="churn_registry")
def churn_registry_fixture(churn_store, isolated_store) -> ChurnStore:
    """This test's own copy of the session registry, as the test's default store."""
    isolated_store.ensure()
    source = sqlite3.connect(churn_store.settings.home / "mlflow.db")
    target = sqlite3.connect(isolated_store.home / "mlflow.db")
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return ChurnStore(
        settings=isolated_store,
        X_score=churn_store.X_score,
        expected=churn_store.expected,
        f1_macro=churn_store.f1_macro,
    )
