"""The churn pipeline as a BentoML 1.4 service, for bench_serving.py's BentoML rows.

``bentoml serve _bench_bentoml_service:ChurnService`` runs it from BentoML's own virtualenv
(bench_serving.py makes it; nbmlops is not installed there), with:

- ``NBMLOPS_BENCH_PIPELINE``: the fitted scikit-learn Pipeline, a joblib file the benchmark wrote;
- ``NBMLOPS_BENCH_MAX_BATCH_SIZE`` (optional): the api's ``max_batch_size``; unset, BentoML's
  default (100) applies;
- ``PYTHONPATH`` holding benchmarks/ and the repository root, so that ``featurize`` is imported
  from ``_bench_pipeline`` itself, the very function nbmlops packaged (its module imports
  ``nbmlops.datasets``, which needs only numpy and pandas).

One api, ``POST /predict``, batchable (BentoML's adaptive batching, ``CorkDispatcher``): it takes
``{"records": [{column: value, ...}, ...]}`` (the body nbmlops' ``/predict`` takes) and BentoML
concatenates the ``records`` lists of concurrent requests into one call, up to
``max_batch_size`` records. The call does what nbmlops' scikit-learn runtime does: ``featurize``,
the Pipeline's transformers once, then the classifier's ``predict`` and ``predict_proba`` on
their output. It answers a JSON list, one ``{"prediction": label, "proba": {label: p}}`` per
record. No input checks: that is nbmlops' work alone.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import joblib
import numpy as np
import pandas as pd
from _bench_pipeline import featurize

PIPELINE = "NBMLOPS_BENCH_PIPELINE"
MAX_BATCH_SIZE = "NBMLOPS_BENCH_MAX_BATCH_SIZE"

# BentoML's own default unless the benchmark asks for another
_batching = {}
if MAX_BATCH_SIZE in os.environ:
    _batching["max_batch_size"] = int(os.environ[MAX_BATCH_SIZE])


@bentoml.service
class ChurnService:
    def __init__(self) -> None:
        pipeline = joblib.load(os.environ[PIPELINE])
        self.transform = pipeline[:-1]
        self.classifier = pipeline[-1]
        self.labels = [str(c) for c in self.classifier.classes_]

    @bentoml.api(batchable=True, **_batching)
    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        features = self.transform.transform(featurize(pd.DataFrame.from_records(records)))
        predictions = self.classifier.predict(features)
        proba = np.asarray(self.classifier.predict_proba(features), dtype=float)
        return [
            {"prediction": label, "proba": dict(zip(self.labels, row, strict=True))}
            for label, row in zip(predictions.tolist(), proba.tolist(), strict=True)
        ]
