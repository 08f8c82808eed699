"""``serve --runtime onnx``: the same API, checks and log, answered by the ONNX twin."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

import nbmlops
from nbmlops.errors import ArtifactError, UsageError
from nbmlops.predlog.log import PredictionLog
from tests.churn_store import (
    NAME,
    churn_registry_fixture,  # noqa: F401 - a fixture
    churn_store_fixture,  # noqa: F401 - a fixture
)


def answers(url: str, records: list[dict]) -> list[dict]:
    reply = httpx.post(f"{url}/predict", content=json.dumps({"records": records}), timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()["predictions"]


def test_the_onnx_runtime_answers_as_scikit_learn_does_checks_and_logs(churn_registry):
    nbmlops.export(f"{NAME}@v2")
    records = json.loads(churn_registry.X_score.to_json(orient="records"))
    onnx = nbmlops.serve(f"{NAME}@v2", runtime="onnx")
    sklearn = nbmlops.serve(f"{NAME}@v2")
    try:
        assert httpx.get(f"{onnx.url}/metadata").json()["runtime"] == "onnx"
        assert httpx.get(f"{sklearn.url}/metadata").json()["runtime"] == "sklearn"
        got, expected = answers(onnx.url, records), answers(sklearn.url, records)
        assert [a["prediction"] for a in got] == [a["prediction"] for a in expected]
        for a, b in zip(got, expected, strict=True):
            assert a["proba"].keys() == b["proba"].keys()
            np.testing.assert_allclose(
                list(a["proba"].values()), list(b["proba"].values()), atol=1e-4
            )
        bad = httpx.post(f"{onnx.url}/predict", json={**records[0], "tenure_months": "ten"})
        assert bad.status_code == 422 and "tenure_months" in bad.text
    finally:
        onnx.stop()
        sklearn.stop()
    log = PredictionLog(churn_registry.settings.log_uri)
    try:
        assert log.count(NAME, "ok") == 2 * len(records) and log.count(NAME, "rejected") == 1
    finally:
        log.close()


def test_a_version_without_a_proven_twin_is_refused_before_a_server_starts(churn_registry):
    with pytest.raises(UsageError, match=r"no parity-proven ONNX twin.*nbmlops export churn@v1"):
        nbmlops.serve(f"{NAME}@v1", runtime="onnx")


def test_a_modified_twin_is_refused(churn_registry):
    nbmlops.export(f"{NAME}@v3")
    handle = nbmlops.serve(f"{NAME}@v3", runtime="onnx")  # fetches the twin into the cache
    handle.stop()
    cached = churn_registry.settings.home / "cache" / "onnx" / NAME / "3" / "model.onnx"
    cached.write_bytes(cached.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="ONNX graph .* differs from the one its export proved"):
        nbmlops.serve(f"{NAME}@v3", runtime="onnx")


def test_a_server_on_an_alias_follows_it_to_the_next_versions_twin(churn_registry):
    for version in ("1", "2"):
        nbmlops.export(f"{NAME}@v{version}")
    nbmlops.promote(f"{NAME}@v1")
    server = nbmlops.serve(f"{NAME}@production", runtime="onnx")
    try:
        nbmlops.promote(f"{NAME}@v2")
        deadline = time.monotonic() + 30
        while (meta := httpx.get(f"{server.url}/metadata").json())["version"] != "2":
            assert time.monotonic() < deadline, "the server never followed the promotion"
            time.sleep(0.2)
        assert meta["runtime"] == "onnx"
        record = json.loads(churn_registry.X_score.iloc[:1].to_json(orient="records"))
        expected = churn_registry.expected["2"].iloc[0]
        got = answers(server.url, record)[0]
        assert got["prediction"] == expected["prediction"]
        assert abs(got["proba"]["1"] - expected["proba_1"]) < 1e-4
    finally:
        server.stop()
