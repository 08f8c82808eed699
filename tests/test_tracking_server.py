"""The team path: a real ``mlflow server`` over HTTP instead of the embedded store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import nbmlops
from nbmlops.config import Settings
from nbmlops.datasets import make_churn
from nbmlops.registry.registry import Registry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tracking_server(tmp_path):
    """An ``mlflow server`` with a sqlite backend and proxied artifacts; stopped by pid."""
    port = free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start (exit code {proc.poll()})")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_package_and_load_through_a_tracking_server(tracking_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
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
    version = nbmlops.package("churn", clf, x, target=y, eval=(x, y), alias="production")
    assert version.source.startswith("mlflow-artifacts:")

    registry = Registry(settings)
    assert registry.resolve("churn").version == "1"
    # the server's "no such alias" and "no such model" are told apart from a failure
    assert registry.alias_version("churn", "staging") is None
    assert registry.alias_version("no-such-model", "production") is None
    assert registry.get("churn", "1").metrics["f1_macro"] > 0.5
    assert not (tmp_path / ".nbmlops" / "mlflow.db").exists()

    model = nbmlops.load("churn@production")
    assert model.path.is_relative_to(settings.home / "cache")
    expected = clf.predict_proba(x)[:, 1]
    got = model.predict(x)
    pd.testing.assert_series_equal(
        got["proba_1"], pd.Series(expected, index=x.index, name="proba_1"), check_exact=False
    )
    assert nbmlops.load("models:/churn@production").metadata["version"] == "1"
