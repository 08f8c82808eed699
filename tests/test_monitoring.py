"""Drift engine and monitor reports over a real prediction log and a real registry."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

import nbmlops
from nbmlops._artifact_code.nbmlops_loader_v1 import predict_frame
from nbmlops.cli import main
from nbmlops.datasets import make_churn
from nbmlops.drift import benjamini_hochberg, detect_drift
from nbmlops.monitoring import monitor, parse_duration
from nbmlops.predlog import ERROR, OK, REJECTED, LogRecord, PredictionLog
from nbmlops.profile import build_profile
from tests.conftest import outputs_text
from tests.served_model import logistic_pipeline

NUMERIC = ["tenure_months", "monthly_charges", "support_calls"]


def drifted(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Shift monthly_charges by one standard deviation, move contract shares, add a region."""
    out = frame.copy()
    out["monthly_charges"] = out["monthly_charges"] + 20
    n = len(out)
    out["contract"] = pd.Categorical(
        rng.choice(["month-to-month", "one-year", "two-year"], n, p=[0.2, 0.3, 0.5]),
        categories=out["contract"].cat.categories,
    )
    out["region"] = np.where(rng.random(n) < 0.3, "atlantis", out["region"])
    return out


@pytest.fixture(scope="module")
def reference():
    train = make_churn(20_000, seed=0).drop(columns="churned")
    outputs = pd.DataFrame({"prediction": np.zeros(len(train))})
    return build_profile(train, outputs)


@pytest.mark.parametrize("n", [200, 1_000, 5_000])
def test_same_distribution_stays_quiet(reference, n):
    current = make_churn(n, seed=n).drop(columns="churned")
    results = detect_drift(list(reference.columns), current)
    assert [r.name for r in results if r.drifted] == []


@pytest.mark.parametrize("n", [1_000, 20_000])
def test_injected_drift_is_found_and_only_there(reference, n):
    current = drifted(make_churn(n, seed=7).drop(columns="churned"), np.random.default_rng(7))
    results = {r.name: r for r in detect_drift(list(reference.columns), current)}
    assert {name for name, r in results.items() if r.drifted} == {
        "monthly_charges",
        "contract",
        "region",
    }
    assert results["monthly_charges"].test == ("ks" if n < 1000 else "wasserstein")
    assert results["contract"].test == ("chi2" if n < 1000 else "jensen_shannon")
    assert "atlantis" in results["region"].note
    assert results["monthly_charges"].psi > 0.2
    assert results["monthly_charges"].pvalue < 1e-6


def test_benjamini_hochberg_matches_the_textbook():
    adjusted = benjamini_hochberg([0.01, 0.04, 0.03, None, 0.5])
    assert adjusted[3] is None
    assert adjusted[0] == pytest.approx(0.04)
    assert adjusted[1] == pytest.approx(0.0533333333)
    assert adjusted[2] == pytest.approx(0.0533333333)
    assert adjusted[4] == pytest.approx(0.5)


@pytest.fixture(name="packaged")
def packaged_fixture(settings):
    df = make_churn(3000, seed=0)
    x, y = df.drop(columns="churned"), df["churned"]
    clf = logistic_pipeline(NUMERIC).fit(x, y)
    nbmlops.package("churn", clf, x, target=y, eval=(x, y), settings=settings)
    return clf


def log_traffic(settings, clf, frame, *, ts=None, latency=5.0, status=OK, labels=None):
    """Write what a server would log for ``frame`` (ids returned)."""
    log = PredictionLog(settings.home / "predictions.db")
    outputs = predict_frame(clf, [], frame)
    records, ids = [], []
    now = ts or time.time()
    for i, (row, out) in enumerate(
        zip(json.loads(frame.to_json(orient="records")), outputs.itertuples(), strict=True)
    ):
        rid = f"{now}-{i}-{status}"
        ids.append(rid)
        answer = {"prediction": int(out.prediction), "proba": {"0": out.proba_0, "1": out.proba_1}}
        records.append(
            LogRecord(
                rid,
                now,
                "churn",
                "1",
                "primary",
                "/predict",
                status,
                latency,
                row,
                answer if status == OK else None,
                None if status == OK else "boom",
            )
        )
    log.write(records)
    if labels is not None:
        log.add_feedback(list(zip(ids, labels, strict=True)), now)
    log.close()
    return ids


def test_clean_traffic_is_ok_and_the_json_has_the_contract(settings, packaged):
    log_traffic(settings, packaged, make_churn(2000, seed=5).drop(columns="churned"))
    report = monitor("churn", settings=settings)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["status"] == "ok", report
    assert data["model"] == "churn" and data["version"] == "1"
    assert data["n_predictions"] == 2000
    assert set(data["window"]) == {"start", "end"}
    assert set(data["latency_ms"]) == {"p50", "p95", "p99"} and data["latency_ms"]["p50"] == 5.0
    assert data["error_rate"] == 0.0 and data["quality"] is None
    assert data["staleness_days"] < 1
    assert {f["name"] for f in data["features"]} == set(make_churn(5).columns) - {"churned"}
    for feature in data["features"]:
        assert set(feature) >= {"name", "kind", "test", "statistic", "pvalue", "psi", "drifted"}
    assert data["prediction_drift"]["drifted"] is False
    assert data["alerts"] == []
    frame = report.to_frame()
    assert "monthly_charges" in frame.index and "(prediction)" in frame.index


def test_drifted_traffic_alerts_with_reasons_and_cli_exits_1(settings, packaged, capsys):
    current = drifted(make_churn(3000, seed=9).drop(columns="churned"), np.random.default_rng(9))
    log_traffic(settings, packaged, current)
    report = monitor("churn", settings=settings)
    assert report.status == "alert"
    assert {a.feature for a in report.alerts if a.kind == "drift"} == {
        "monthly_charges",
        "contract",
        "region",
    }
    assert [f.name for f in report.features[:3]] and all(f.drifted for f in report.features[:3])
    assert main(["monitor", "churn", "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "alert" and printed["alerts"]
    html_file = settings.home.parent / "report.html"
    assert main(["monitor", "churn", "--html", str(html_file)]) == 1
    page = html_file.read_text()
    assert "ALERT" in page and "monthly_charges" in page and "data:image/png;base64," in page


def test_window_and_since_select_what_is_judged(settings, packaged):
    old = time.time() - 3 * 86400
    current = drifted(make_churn(2000, seed=3).drop(columns="churned"), np.random.default_rng(3))
    log_traffic(settings, packaged, current, ts=old)
    log_traffic(settings, packaged, make_churn(1500, seed=4).drop(columns="churned"))
    assert monitor("churn", settings=settings).n_predictions == 3500
    recent = monitor("churn", window="24h", settings=settings)
    assert recent.n_predictions == 1500 and recent.status == "ok"
    since = (datetime.now(UTC) - timedelta(days=4)).isoformat()
    both = monitor("churn", window="1h", since=since, settings=settings)
    assert both.n_predictions == 1500, "the later start wins"
    assert monitor("churn", since=since, settings=settings).status == "alert"
    assert parse_duration("30m") == timedelta(minutes=30)
    with pytest.raises(nbmlops.UsageError, match="--window"):
        monitor("churn", window="soon", settings=settings)


def test_errors_latency_and_feedback_quality(settings, packaged):
    frame = make_churn(400, seed=6)
    x, y = frame.drop(columns="churned"), frame["churned"]
    log_traffic(settings, packaged, x, latency=900.0, labels=list(1 - y))
    log_traffic(settings, packaged, x.head(20), status=ERROR)
    log_traffic(settings, packaged, x.head(3), status=REJECTED)
    report = monitor("churn", settings=settings)
    kinds = {a.kind for a in report.alerts}
    assert {"error_rate", "latency", "quality"} <= kinds
    assert report.error_rate == pytest.approx(20 / 420)
    assert report.rejected_rate == pytest.approx(3 / 423)
    assert report.quality["n_labels"] == 400
    assert report.quality["metrics"]["accuracy"] < 0.5 < report.quality["packaged"]["accuracy"]


def test_too_few_predictions_is_a_warning(settings, packaged):
    log_traffic(settings, packaged, make_churn(20, seed=8).drop(columns="churned"))
    report = monitor("churn", settings=settings)
    assert report.status == "warning"
    assert any(w.kind == "volume" for w in report.warnings)


def test_monitor_magic_leaves_a_static_report_in_the_notebook(run_cells, settings, packaged):
    log_traffic(settings, packaged, make_churn(500, seed=2).drop(columns="churned"))
    nb = run_cells("%load_ext nbmlops", "report = %mlops_monitor churn\nreport", "report.alerts")
    bundle = next(o["data"] for o in nb.cells[1].outputs if "data" in o)
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "Drift per feature" in bundle["text/html"]
    assert "data:image/png;base64," in bundle["text/html"]
    assert "<script" not in bundle["text/html"]
    assert "churn v1" in outputs_text(nb)


def test_refreshing_dashboard_updates_in_place(settings, packaged):
    from nbmlops.dashboard import Dashboard

    log_traffic(settings, packaged, make_churn(300, seed=1).drop(columns="churned"))
    dashboard = Dashboard(lambda: monitor("churn", settings=settings), refresh=0.2)
    try:
        assert dashboard.report.status == "ok" and dashboard.report.n_predictions == 300
        first_widget = dashboard.widget
        current = drifted(
            make_churn(3000, seed=2).drop(columns="churned"), np.random.default_rng(2)
        )
        log_traffic(settings, packaged, current)
        deadline = time.monotonic() + 30
        while dashboard.report.n_predictions != 3300 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dashboard.report.n_predictions == 3300
        assert dashboard.widget is first_widget
        assert "ALERT" in dashboard.widget.children[1].value
        assert dashboard.alerts and dashboard.to_dict()["status"] == "alert"
        bundle = dashboard._repr_mimebundle_()
        assert "ALERT" in bundle["text/html"] and "alert" in bundle["text/plain"].lower()
    finally:
        dashboard.stop()
