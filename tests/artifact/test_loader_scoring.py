"""The loader's scoring: a forest's predictions come from the one pass that gives its
probabilities, and are exactly what ``predict`` gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nbmlops.artifact.nbmlops_loader_v1 import score_frame


def data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(600, 4)), columns=list("abcd"))
    return X, rng.choice(["no", "maybe", "yes"], 600)


@pytest.mark.parametrize("forest", [RandomForestClassifier, ExtraTreesClassifier])
def test_a_forest_scores_as_predict_and_predict_proba_do(forest):
    X, y = data()
    model = make_pipeline(StandardScaler(), forest(n_estimators=30, random_state=0)).fit(X, y)
    calls = []
    final = model[-1]
    original = final.predict_proba
    final.predict_proba = lambda features: calls.append(len(features)) or original(features)
    predictions, proba = score_frame(model, [], X)
    assert calls == [600]  # the trees are walked once, not once more for predict
    del final.predict_proba
    np.testing.assert_array_equal(predictions, model.predict(X))
    assert predictions.dtype == model.predict(X).dtype
    np.testing.assert_array_equal(proba, model.predict_proba(X))


def test_a_forest_whose_predict_is_its_own_is_asked_for_its_predictions():
    class Cautious(RandomForestClassifier):
        def predict(self, X):
            return np.full(len(X), "no")

    X, y = data()
    model = Cautious(n_estimators=5, random_state=0).fit(X, y)
    predictions, proba = score_frame(model, [], X)
    assert set(predictions) == {"no"} and proba.shape == (600, 3)
