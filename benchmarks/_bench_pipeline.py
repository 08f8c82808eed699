"""The pipeline and preprocessing the benchmarks package, as in notebooks/quickstart.ipynb.

``featurize`` lives in this real source file because ``nbmlops.package`` captures
preprocessing by source (``inspect.getsource``); a function built by ``exec`` could not be
captured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbmlops.datasets import make_churn

CHARGE_CAP = 120.0  # a constant the featurizer reads, captured as a literal
CATEGORICAL = ["contract", "payment_method", "region", "tenure_bucket"]
NUMERIC = ["tenure_months", "charges_capped", "support_calls", "paperless"]


def tenure_bucket(months):
    return pd.cut(months, bins=[-1, 6, 24, 48, 1000], labels=["new", "young", "settled", "loyal"])


def featurize(frame):
    out = frame.copy()
    out["tenure_bucket"] = tenure_bucket(out["tenure_months"]).astype("string").fillna("unknown")
    out["charges_capped"] = np.minimum(out["monthly_charges"], CHARGE_CAP)
    out["payment_method"] = out["payment_method"].fillna("unknown")
    out["paperless"] = out["paperless"].astype(int)
    return out.drop(columns=["monthly_charges"])


def build_pipeline():
    """ColumnTransformer(OneHotEncoder + SimpleImputer) then HistGradientBoostingClassifier."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    return make_pipeline(
        ColumnTransformer(
            [
                ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
                ("num", SimpleImputer(strategy="median"), NUMERIC),
            ]
        ),
        HistGradientBoostingClassifier(max_iter=100, random_state=0),
    )


@dataclass(frozen=True)
class ChurnSplit:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


def churn_split(n_rows: int, seed: int = 0) -> ChurnSplit:
    """The quickstart's 80/20 split of ``make_churn(n_rows)``."""
    df = make_churn(n_rows, seed=seed)
    X, y = df.drop(columns="churned"), df["churned"]
    cut = int(0.8 * n_rows)
    return ChurnSplit(X.iloc[:cut], X.iloc[cut:], y.iloc[:cut], y.iloc[cut:])
