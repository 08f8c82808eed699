"""A model on the data users have: every dtype a raw frame brings, read the way users read it.

The frame has a naive datetime, an ordered Categorical the featurizer reads by ``.cat.codes``,
a string category, an int, a bool, a float with NaNs and a nullable ``Int64`` with missing
values; the model is a random forest (its trees compute in float32). :data:`CELLS` is the
same code as notebook cells, so a test can package it from a real kernel.
"""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier

SIZES = ["small", "medium", "large"]  # an order that is not alphabetical


def make_frame(n, seed):
    rng = np.random.default_rng(seed)
    spend = rng.gamma(2.0, 50.0, n)
    spend[rng.random(n) < 0.1] = np.nan
    visits = pd.array(rng.integers(0, 20, n), dtype="Int64")
    visits[rng.random(n) < 0.1] = pd.NA
    frame = pd.DataFrame(
        {
            "signup": pd.Timestamp("2025-01-01")
            + pd.to_timedelta(rng.integers(0, 365 * 24 * 60, n), unit="min"),
            "size": pd.Categorical(rng.choice(SIZES, n), categories=SIZES, ordered=True),
            "city": rng.choice(["oslo", "lima", "pune", "kyiv"], n),
            "age": rng.integers(18, 80, n),
            "member": rng.random(n) < 0.4,
            "spend": spend,
            "visits": visits,
        }
    )
    score = (
        frame["size"].cat.codes * 0.8
        + frame["member"] * 0.6
        + np.nan_to_num(spend, nan=100.0) / 100
        + frame["signup"].dt.hour / 24
        - frame["age"] / 60
        + frame["visits"].fillna(5).astype(float) / 10
    )
    label = (score + rng.normal(0, 0.3, n) > score.median()).astype(int)
    return frame, label


def featurize(df):
    """Numbers for the tree: the size's code (its order matters), the hour, the day."""
    out = pd.DataFrame(index=df.index)
    out["size_code"] = df["size"].cat.codes
    out["hour"] = df["signup"].dt.hour
    out["dayofyear"] = df["signup"].dt.day_of_year
    out["city"] = df["city"].map({"oslo": 0, "lima": 1, "pune": 2, "kyiv": 3})
    out["age"] = df["age"]
    out["member"] = df["member"].astype(int)
    out["spend"] = df["spend"]
    out["visits"] = df["visits"].astype("float64")
    return out


def train():
    """The notebook's training: ``(clf, X_train, y_train, X_test, y_test)``."""
    X_train, y_train = make_frame(800, seed=0)
    X_test, y_test = make_frame(200, seed=1)
    clf = RandomForestClassifier(n_estimators=40, random_state=0, n_jobs=1)
    clf.fit(featurize(X_train), y_train)
    return clf, X_train, y_train, X_test, y_test


CELLS = (
    "import numpy as np\nimport pandas as pd\n"
    "from sklearn.ensemble import RandomForestClassifier\n"
    f"SIZES = {SIZES!r}\n\n" + inspect.getsource(make_frame),
    inspect.getsource(featurize),
    inspect.getsource(train) + "\nclf, X_train, y_train, X_test, y_test = train()",
)
